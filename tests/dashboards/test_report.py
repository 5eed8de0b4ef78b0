"""Report plot data on a stored search, the self-contained report file, and real-browser checks of the
report and of the Optuna dashboard (headless Chromium)."""

import re
import shutil
import threading

import pytest

from subnetsearch.dashboards import device_report, write_report
from subnetsearch.devices import Device, LatencyProtocol, Roofline
from subnetsearch.search import Constraints, EvaluationSettings, SearchSession
from subnetsearch.spaces import Mode
from subnetsearch.storage import Store
from subnetsearch.supernets import save_checkpoint


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_arch):
    """A store with a DSE (1 iteration), a random Optuna search (5 trials) and a predictor search (2
    rounds) of the tiny supernet."""
    import torch

    from subnetsearch.supernets import build_supernet

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("report")
    checkpoint = folder / "tiny.pt"
    save_checkpoint(checkpoint, build_supernet(tiny_arch), {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{folder / 'store.db'}"
    store = Store(url)
    store.add_device(Device("quick", protocol=LatencyProtocol(runtime="eager", threads=1, repeats=1, warmup=1,
                                                              min_run_time=0.01),
                            roofline=Roofline(5e9, ((None, 5e9),), 1)))
    session = SearchSession(store, url, store.get_device("quick"), checkpoint,
                            EvaluationSettings(calibration_batches=1, calibration_batch_size=32, max_eval_batches=2))
    dse, _ = session.dse(0.0, "latency", ["accuracy", "latency"], max_iterations=1)
    session.optuna("random", 5, ["accuracy", "latency"], Constraints(), seed=1)
    session.predictor(8, ["accuracy", "latency"], seed=2, init_size=4, batch=2)
    return store, url, session, dse, folder


def test_plot_data_follows_the_store(searched) -> None:
    store, url, session, dse, _ = searched
    report = device_report(store, url, "quick", session.checkpoint.hash, session.supernet.full_mode().id)
    assert set(report.costs) == {"latency", "macs", "energy"}
    front = store.get_front("quick", "accuracy,latency", session.checkpoint.hash)
    assert [p.mode_id for p in report.fronts["latency"].points] == [e.mode_id for e in front]
    assert report.full["macs"].mode_id == session.supernet.full_mode().id
    assert {s.name for s in report.strategy_fronts["latency"]} == {"dse-latency", "optuna-random", "predictor"}
    assert [p.mode_id for p in report.dse["latency"][0].points] == [s.mode.id for s in dse.trajectory]
    assert len(report.hypervolume) == 3
    [fit] = report.predictor_fit  # the predictor's held-out rank correlation, per round (none where all tie)
    assert set(fit.x) <= {1, 2} and all(-1 <= tau <= 1 for tau in fit.y)
    assert [(r["round"], r["trained_on"]) for r in report.predictor_rounds[fit.name]] == [(1, 4), (2, 6)]
    for curve in report.hypervolume:  # hypervolume never falls as evaluations are added
        assert all(b >= a - 1e-12 for a, b in zip(curve.y, curve.y[1:], strict=False)) and 0 < curve.y[-1] <= 1 + 1e-9
    assert len(report.layer_modes) == len(front) and len(report.layers) == len(session.supernet.space)
    hover = report.fronts["latency"].points[0].label
    assert "subnetsearch export" in hover and report.fronts["latency"].points[0].mode_id in hover
    assert "of its roofline bound" in hover  # the device has a roofline: each latency says how close it is
    supernet = session.supernet
    marked = device_report(store, url, "quick", session.checkpoint.hash, supernet.full_mode().id,
                           lambda mode_json: supernet.kind_of(Mode.from_json(mode_json)))
    kinds = {p.mode_id: p.kind for p in marked.fronts["latency"].points}
    assert kinds and set(kinds.values()) <= {"full", "groups"}  # each front mode marked with what it changes
    assert all(f"({kind})" in p.label for p, kind in zip(marked.fronts["latency"].points, kinds.values(), strict=True))
    assert (kinds.get(supernet.full_mode().id) or "full") == "full"


def test_the_full_network_is_marked_only_where_it_was_evaluated(searched) -> None:
    """On a device where only a smaller mode was evaluated, no mode is passed off as the full network."""
    store, url, session, _, _ = searched
    store.add_device(Device("other", protocol=LatencyProtocol(runtime="eager", threads=1, repeats=1, warmup=1,
                                                              min_run_time=0.01)))
    other = SearchSession(store, url, store.get_device("other"), session.checkpoint_path, session.settings)
    other.evaluate(session.supernet.smallest_mode())
    report = device_report(store, url, "other", session.checkpoint.hash, session.supernet.full_mode().id)
    assert report.costs and report.full == {}
    assert "was not evaluated on other" in report.full_missing and "--modes full" in report.full_missing
    from subnetsearch.dashboards import front_figure, full_mode_of

    assert full_mode_of(session.checkpoint.arch) == session.supernet.full_mode().id
    figure = front_figure(report, "macs")
    assert "no full-network star" in figure.layout.title.text
    assert all(trace.name != "full network" for trace in figure.data)


def test_report_is_one_self_contained_file(searched) -> None:
    store, url, session, _, folder = searched
    report = device_report(store, url, "quick", session.checkpoint.hash, session.supernet.full_mode().id)
    path = write_report(folder / "report.html", [report], None, "test report", store.url)
    text = path.read_text()
    assert not re.search(r"<script[^>]+src=", text)  # plotly.js inlined
    assert not re.search(r"<link[^>]+href=", text)
    assert "Plotly.newPlot" in text and len(text) > 1_000_000
    for div in ("front-quick-latency", "front-quick-macs", "front-quick-energy", "hypervolume-quick", "predictor-quick",
                "layers-quick"):
        assert f'id="{div}"' in text


def _browser():
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        import os

        if os.environ.get("CI"):
            raise RuntimeError("CI needs Debian's chromium and chromium-driver (scripts/test.sh installs them)")
        pytest.skip("NO CHROMIUM: browser tests skipped (apt-get install -y chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(browser, script: str, timeout: float = 30.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda b: b.execute_script(script))


@pytest.mark.browser
def test_report_renders_the_front_in_a_real_browser(searched) -> None:
    store, url, session, _, folder = searched
    report = device_report(store, url, "quick", session.checkpoint.hash, session.supernet.full_mode().id)
    path = write_report(folder / "browser.html", [report], None, "browser test", store.url)
    browser = _browser()
    try:
        browser.get(path.resolve().as_uri())
        points = _wait(browser, "const t = document.querySelectorAll('#front-quick-latency .scatterlayer .trace');"
                                "return t.length ? t[0].querySelectorAll('path.point').length : 0;")
        assert points == len(report.fronts["latency"].points)
        stars = browser.execute_script("return document.querySelectorAll('#front-quick-macs .scatterlayer .trace')[1]"
                                       ".querySelectorAll('path.point').length")
        assert stars == 1  # the full network, marked
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert [name for name in fetched if not name.startswith(("file:", "data:", "blob:"))] == []
    finally:
        browser.quit()


def test_dashboard_on_a_store_without_studies_and_writable_on_request(tmp_path) -> None:
    import json
    import urllib.request
    from wsgiref.simple_server import make_server

    import optuna

    from subnetsearch.dashboards import dashboard_app
    from subnetsearch.dashboards._serve import _QuietHandler
    from subnetsearch.storage import Store

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    Store(url).dispose()  # the store exists, no search has created Optuna's tables yet
    for writable in (False, True):
        server = make_server("127.0.0.1", 0, dashboard_app(url, writable), handler_class=_QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{server.server_port}"
            with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as answer:
                assert json.loads(answer.read())["study_summaries"] == [] or writable
            study = optuna.create_study(storage=url, study_name=f"s{writable}")
            request = urllib.request.Request(f"{base}/api/studies/{study._study_id}", method="DELETE")
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            assert status == (204 if writable else 405)
            assert (f"s{writable}" in optuna.get_all_study_names(url)) == (not writable)
        finally:
            server.shutdown()


@pytest.mark.browser
def test_dashboard_serves_every_search_as_a_study_in_a_real_browser(searched) -> None:
    from wsgiref.simple_server import make_server

    from subnetsearch.dashboards import dashboard_app
    from subnetsearch.dashboards._serve import _QuietHandler

    store, url, session, _, _ = searched
    server = make_server("127.0.0.1", 0, dashboard_app(url), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    browser = _browser()
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/dashboard/")
        names = [s.name for s in store.list_searches()]
        _wait(browser, "return document.body.innerText.includes('optuna-random')")
        text = browser.execute_script("return document.body.innerText")
        for name in names:
            assert name.split("/")[1] in text  # each search's study is listed (names are long; strategy shown)
        # the study page of the Optuna search draws its Pareto-front plot with one point per trial
        import optuna

        summary = next(s for s in optuna.get_all_study_summaries(url) if "/optuna-random/" in s.study_name)
        browser.get(f"http://127.0.0.1:{server.server_port}/dashboard/studies/{summary._study_id}")
        points = _wait(browser, "const g = document.getElementById('graph-pareto-front');"
                                "return g ? g.querySelectorAll('path.point').length : 0;")
        assert points == summary.n_trials == 5
        metric_names = optuna.load_study(study_name=summary.study_name, storage=url).metric_names
        assert metric_names == ["accuracy", "latency"]

        # a constrained search: the dashboard's API (fetched by the page's browser) shows the same
        # feasibility as the store and Optuna, and its best trials are the feasible front only
        accuracies = sorted(t.values[0] for t in optuna.load_study(study_name=summary.study_name, storage=url).trials)
        threshold = accuracies[len(accuracies) // 2]
        session.optuna("random", 5, ["accuracy", "latency"], Constraints(min_accuracy=threshold), seed=1,
                       name="constrained")
        constrained = optuna.load_study(study_name="constrained", storage=url)
        infeasible = {t.number for t in constrained.trials if t.values[0] < threshold}
        assert infeasible and len(infeasible) < 5
        detail = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"fetch('/api/studies/{constrained._study_id}').then(r => r.json()).then(done);")
        shown = {t["number"]: t["constraints"] for t in detail["trials"]}
        for trial in constrained.trials:
            assert shown[trial.number] == [pytest.approx(threshold - trial.values[0])]
        best = {t["number"] for t in detail["best_trials"]}
        assert best == {t.number for t in constrained.best_trials} and not best & infeasible
        # DSE trials carry the times their evaluations really took (the timeline draws them)
        dse_study = next(s for s in optuna.get_all_study_summaries(url) if "/dse-" in s.study_name)
        for trial in optuna.load_study(study_name=dse_study.study_name, storage=url).trials:
            assert trial.datetime_complete > trial.datetime_start, trial.number
        # read-only by default: the page's own delete request is refused and the study stays
        status = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"fetch('/api/studies/{constrained._study_id}', {{method: 'DELETE'}}).then(r => done(r.status));")
        assert status == 405 and "constrained" in {s.study_name for s in optuna.get_all_study_summaries(url)}
    finally:
        browser.quit()
        server.shutdown()
