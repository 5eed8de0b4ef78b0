import dataclasses
import re
import shlex
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.devices import Roofline
from subnetsearch.storage import Store
from subnetsearch.supernets import save_checkpoint

runner = CliRunner()
TINY = {"family": "wenet-cifar-resnet", "depth": 8, "widths": [8, 16, 16], "in_channels": 1, "num_classes": 4,
        "input_size": 12, "group_choices": [1, 2, 4, 8], "shuffle": True, "shuffle_rule": "balanced"}


@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_supernet):
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    return path


@pytest.fixture
def storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.mark.slow
def test_run_prints_a_table_of_modes_and_stores_them(tiny_checkpoint, storage, tmp_path) -> None:
    add = runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                              "--storage", storage])
    assert add.exit_code == 0, add.output
    args = ["run", "--checkpoint", str(tiny_checkpoint), "--random-modes", "1", "--device", "quick", "--storage", storage,
            "--dse-iterations", "0", "--trials", "0", "--report", str(tmp_path / "report.html")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for text in ("full", "uniform 1/2", "smallest", "random 1", "MMACs", "latency ms", "8-8-8-8-8-8-8-8", "energy",
                 "val acc (stored BN)"):  # WeNet's modes each have their own BN statistics: scored with them too
        assert text in result.output
    assert "5 modes evaluated in full now, 0 reused" in result.output  # uniform 1/8 is smallest here: one row
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 modes evaluated in full now, 5 reused" in again.output


def test_run_searches_and_ends_with_a_query_that_works(tiny_checkpoint, storage, tmp_path) -> None:
    runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                        "--storage", storage])
    result = runner.invoke(app, ["run", "--checkpoint", str(tiny_checkpoint), "--random-modes", "0", "--device", "quick",
                                 "--storage", storage, "--dse-iterations", "1", "--trials", "3", "--delta", "0.0",
                                 "--report", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    assert "iteration 1:" in result.output and "Optuna (tpe, seed 0)" in result.output
    lines = result.output.splitlines()  # each strategy's outcome right after its own progress, before the next
    dse_done = next(i for i, line in enumerate(lines) if line.strip().startswith("DSE:"))
    optuna_starts = next(i for i, line in enumerate(lines) if line.startswith("optuna ("))
    assert dse_done < optuna_starts, result.output
    assert sorted(record.strategy for record in Store(storage).list_searches()) == ["dse-latency", "optuna-tpe"]
    assert "the Pareto front of this supernet on quick" in result.output
    for column in ("kind", "speedup vs full", "accuracy"):
        assert column in result.output
    looks = re.search(r"multi-fidelity: (\d+) cheap first looks now, (\d+) candidates promoted to a full evaluation "
                      r"and (\d+) dismissed", " ".join(result.output.split()))
    assert looks is not None, result.output
    assert int(looks[1]) == int(looks[2]) + int(looks[3]) > 0  # every look decided once
    assert (tmp_path / "report.html").stat().st_size > 100_000 and "subnetsearch dashboard" in result.output
    query = [line.strip() for line in result.output.splitlines() if line.strip().startswith("subnetsearch best")]
    assert len(query) == 1, result.output
    answer = runner.invoke(app, shlex.split(query[0])[1:])  # exactly the printed command
    assert answer.exit_code == 0 and "best mode for quick" in answer.output, answer.output


@pytest.mark.slow
def test_run_can_search_with_the_predictor_and_shows_its_rounds(tiny_checkpoint, storage, tmp_path) -> None:
    runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                        "--storage", storage])
    args = ["run", "--checkpoint", str(tiny_checkpoint), "--random-modes", "0", "--device", "quick", "--storage",
            storage, "--strategy", "predictor", "--trials", "22", "--calibration-batches", "1",
            "--report", str(tmp_path / "report.html")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "predictor (" in result.output and "on the study's front" in result.output
    rounds = [line for line in result.output.splitlines() if "round 1: fitted on 20, evaluated 2;" in line]
    assert len(rounds) == 1, result.output  # round 1: fitted on the 20 of the design, 2 evaluated
    searches = Store(storage).list_searches()
    assert [record.strategy for record in searches] == ["predictor"] and searches[0].status == "finished"
    again = runner.invoke(app, args)  # resumed by name: nothing evaluated twice
    assert again.exit_code == 0, again.output
    assert "0 modes evaluated in full now" in again.output and "0 cheap first looks now" in again.output, again.output


def test_run_without_checkpoint_fails_clearly(tmp_path, storage) -> None:
    result = runner.invoke(app, ["run", "--checkpoint", str(tmp_path / "none.pt"), "--no-train-if-missing",
                                 "--storage", storage])
    assert result.exit_code == 2 and "checkpoint not found" in result.output


def test_run_with_a_damaged_checkpoint_or_unknown_device_fails_clearly(tmp_path, storage) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    result = runner.invoke(app, ["run", "--checkpoint", str(path), "--storage", storage])
    assert result.exit_code == 2 and "truncated or not a checkpoint" in result.output
    unknown = runner.invoke(app, ["run", "--device", "nowhere", "--storage", storage])
    assert unknown.exit_code == 2 and "unknown device 'nowhere'" in unknown.output


@pytest.mark.slow
def test_devices_add_list_measure_remove(tiny_checkpoint, storage) -> None:
    for runtime in ("eager", "onnxruntime"):
        result = runner.invoke(app, ["devices", "add", f"host-{runtime}", "--runtime", runtime, "--threads", "1",
                                     "--repeats", "1", "--storage", storage])
        assert result.exit_code == 0, result.output
    listing = runner.invoke(app, ["devices", "list", "--storage", storage])
    assert "host-eager" in listing.output and "host-onnxruntime" in listing.output
    measured = runner.invoke(app, ["devices", "measure", "host-onnxruntime", "--checkpoint", str(tiny_checkpoint),
                                   "--modes", "full,smallest", "--storage", storage])
    assert measured.exit_code == 0, measured.output
    assert "smallest" in measured.output and "onnxruntime" in measured.output
    for column in ("grouped x full", "dense x full", "kept ms", "bound ms", "of bound", "speedup"):  # both kernels,
        assert column in measured.output, measured.output  # paired against the full network, the roofline
    assert "noise: " in listing.output or "resolution" in listing.output
    assert "noise: 5 windows" in measured.output  # measured when the device was added
    again = runner.invoke(app, ["devices", "measure", "host-onnxruntime", "--checkpoint", str(tiny_checkpoint),
                                "--modes", "smallest", "--storage", storage])
    assert again.exit_code == 0, again.output
    from sqlalchemy import select

    from subnetsearch.storage._models import LatencyGraphRow
    with Store(storage).session() as session:  # measuring a graph again adds a window to its figure
        assert max(session.scalars(select(LatencyGraphRow.windows))) == 2
    assert "eager conv" in runner.invoke(app, ["devices", "add", "again", "--runtime", "eager", "--threads", "1",
                                               "--storage", storage]).output  # its runtime's convs are in the peak
    assert "above the bound" not in measured.output
    store = Store(storage)  # a peak far below what the runtime reaches: the table says the bound is no bound
    host = store.get_device("host-onnxruntime")
    store.add_device(dataclasses.replace(host, roofline=Roofline(1e6, ((None, 1e15),), 1)), replace=True)
    flagged = runner.invoke(app, ["devices", "measure", "host-onnxruntime", "--checkpoint", str(tiny_checkpoint),
                                  "--modes", "full", "--storage", storage])
    assert flagged.exit_code == 0 and "above the bound: full ran faster than the roofline allows" in flagged.output
    assert runner.invoke(app, ["devices", "remove", "host-eager", "--storage", storage]).exit_code == 0
    assert "host-eager" not in runner.invoke(app, ["devices", "list", "--storage", storage]).output


@pytest.mark.slow
def test_devices_noise_measures_stores_and_judges_a_resolution(tiny_checkpoint, storage) -> None:
    added = runner.invoke(app, ["devices", "add", "quiet", "--runtime", "eager", "--threads", "1", "--no-noise",
                                "--no-roofline", "--storage", storage])
    assert added.exit_code == 0 and "noise:" not in added.output
    assert "not measured" in runner.invoke(app, ["devices", "list", "--storage", storage]).output
    result = runner.invoke(app, ["devices", "noise", "quiet", "--checkpoint", str(tiny_checkpoint), "--windows", "3",
                                 "--storage", storage])
    assert result.exit_code == 0 and "3 windows" in result.output and "resolution" in result.output, result.output
    profile = Store(storage).get_device_noise("quiet")
    assert profile is not None and profile.windows == 3 and len(profile.ratios) == 3
    assert f"{profile.resolution:.1%}" in runner.invoke(app, ["devices", "list", "--storage", storage]).output
    strict = runner.invoke(app, ["devices", "noise", "quiet", "--checkpoint", str(tiny_checkpoint), "--windows", "2",
                                 "--resolution", "0.0000001", "--storage", storage])
    assert strict.exit_code == 1 and "cannot resolve" in strict.output, strict.output


@pytest.mark.parametrize("args, message", [
    (["devices", "noise", "ghost"], "unknown device 'ghost'"),
    (["devices", "noise", "x", "--windows", "1"], "windows"),
    (["devices", "add", "Bad Name"], "is not allowed"),
    (["devices", "add", "x", "--runtime", "tpu"], "runtime"),
    (["devices", "add", "x", "--location", "moon"], "location"),
    (["devices", "add", "x", "--runtime", "auto", "--location", "ray-node"], "use it with --location host"),
    (["devices", "add", "x", "--runtime", "auto", "--runtimes", "eager,tpu"], "runtime must be one of"),
    (["devices", "add", "x", "--runtime", "auto", "--modes", "full,width:0.3"], "unknown: ['width:0.3: no width ratio 0.3"),
    (["devices", "measure", "ghost"], "unknown device 'ghost'"),
    (["devices", "remove", "ghost"], "unknown device 'ghost'"),
])
def test_devices_bad_inputs(args, message, storage) -> None:
    result = runner.invoke(app, [*args, "--storage", storage])
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.slow
def test_devices_add_auto_measures_each_runtime_and_keeps_the_fastest(tiny_checkpoint, storage) -> None:
    from subnetsearch.storage import Store

    result = runner.invoke(app, ["devices", "add", "auto-host", "--runtime", "auto", "--runtimes", "eager,onnxruntime",
                                 "--checkpoint", str(tiny_checkpoint), "--modes", "full,smallest", "--threads", "1",
                                 "--repeats", "1", "--storage", storage])
    assert result.exit_code == 0, result.output
    assert "eager" in result.output and "onnxruntime" in result.output and "geometric mean" in result.output
    fastest = result.output.split("fastest: ")[1].split()[0]
    store = Store(storage)
    assert store.get_device("auto-host").protocol.runtime == fastest in ("eager", "onnxruntime")
    store.dispose()


def test_a_runtime_whose_extra_is_missing_is_refused_naming_the_install(monkeypatch, tiny_checkpoint, storage) -> None:
    from subnetsearch.devices import get_runtime
    from subnetsearch.storage import Store

    monkeypatch.setattr(type(get_runtime("openvino")), "modules", ("subnetsearch_absent_module",))
    added = runner.invoke(app, ["devices", "add", "intel", "--runtime", "openvino", "--storage", storage])
    assert added.exit_code == 2 and "pip install 'subnetsearch[openvino]'" in added.output, added.output
    assert "intel" not in [d.name for d in Store(storage).list_devices()]  # nothing recorded
    remote = runner.invoke(app, ["devices", "add", "intel", "--runtime", "openvino", "--location", "ray-node",
                                 "--storage", storage])  # measured on a node that has it: recorded
    assert remote.exit_code == 0, remote.output
    exported = runner.invoke(app, ["export", "abc", "--device", "intel", "-o", str(tiny_checkpoint.parent / "m.xml"),
                                   "--storage", storage])
    assert exported.exit_code == 2 and "pip install 'subnetsearch[openvino]'" in exported.output, exported.output


def test_devices_elsewhere_are_not_measured_here(tiny_checkpoint, storage) -> None:
    runner.invoke(app, ["devices", "add", "board", "--location", "ray-node", "--storage", storage])
    result = runner.invoke(app, ["devices", "measure", "board", "--checkpoint", str(tiny_checkpoint),
                                 "--storage", storage])
    assert result.exit_code == 2 and "cannot be measured on this host" in result.output


def test_unreachable_storage_fails_clearly() -> None:
    result = runner.invoke(app, ["devices", "list", "--storage", "postgresql+psycopg://u:pw@127.0.0.1:1/x"])
    assert result.exit_code == 2 and "cannot open storage" in result.output and ":pw@" not in result.output


def test_train_smoke_and_bad_inputs(tmp_path) -> None:
    common = ["train", "--data", "synthetic", "--depth", "8", "--widths", "8,16,16", "--groups", "1,2,4",
              "--batch-size", "32", "--epochs", "1"]
    result = runner.invoke(app, [*common, "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ok" / "supernet.pt").exists() and (tmp_path / "ok" / "train_log.jsonl").exists()
    bad_mode = runner.invoke(app, [*common, "--out", str(tmp_path / "x"), "--fixed-mode", "uniform:3"])
    assert bad_mode.exit_code == 2 and "bad mode" in bad_mode.output
    bad_widths = runner.invoke(app, [*common, "--out", str(tmp_path / "y"), "--widths", "8,a"])
    assert bad_widths.exit_code == 2 and "integers" in bad_widths.output
    bad_sampling = runner.invoke(app, [*common, "--out", str(tmp_path / "z"), "--sampling", "every"])
    assert bad_sampling.exit_code == 2 and "sampling" in bad_sampling.output
    assert not (tmp_path / "z").exists()
    bad_depth = runner.invoke(app, [*common, "--out", str(tmp_path / "d"), "--depth", "9"])
    assert bad_depth.exit_code == 2 and "6n+2" in bad_depth.output
    no_data = runner.invoke(app, ["train", "--data-root", str(tmp_path / "nothing"), "--out", str(tmp_path / "e")])
    assert no_data.exit_code == 2 and "nothing" in no_data.output and "apt-get install" in no_data.output
    other_recipe = runner.invoke(app, [*common[:-1], "2", "--out", str(tmp_path / "ok")])
    assert other_recipe.exit_code == 2 and "another recipe" in other_recipe.output


def test_train_is_reproducible_and_records_an_absolute_data_root(tmp_path, monkeypatch) -> None:
    from PIL import Image

    from subnetsearch.supernets._checkpoint import load_checkpoint

    for part in ("train", "val", "test"):
        for label in ("a", "b"):
            (tmp_path / "images" / part / label).mkdir(parents=True)
            for index in range(4):
                Image.new("L", (12, 12), index * 60 + (label == "b") * 30).save(tmp_path / "images" / part / label /
                                                                              f"{index}.png")
    monkeypatch.chdir(tmp_path)
    common = ["train", "--data", "imagefolder", "--data-root", "images", "--depth", "8", "--widths", "8,16,16",
              "--groups", "1,2", "--batch-size", "4", "--epochs", "1", "--no-hflip", "--seed", "3"]
    hashes = []
    for out in ("one", "two"):
        result = runner.invoke(app, [*common, "--out", out])
        assert result.exit_code == 0, result.output
        hashes.append(load_checkpoint(tmp_path / out / "supernet.pt"))
    assert hashes[0].hash == hashes[1].hash  # the same command gives the same checkpoint
    assert hashes[0].data["root"] == str(tmp_path / "images") and hashes[0].data["hflip"] is False
    assert hashes[0].arch["in_channels"] == 1 and hashes[0].arch["input_size"] == 12  # grayscale, own size
    no_divisor = runner.invoke(app, [*common[:-2], "--groups", "1,3,5", "--out", "three"])
    assert no_divisor.exit_code == 2 and "besides 1: a count must divide" in " ".join(no_divisor.output.split())


def test_module_entry_point_shows_help() -> None:
    result = subprocess.run([sys.executable, "-m", "subnetsearch", "--help"], capture_output=True, text=True, check=True)
    assert "run" in result.stdout and "train" in result.stdout


@pytest.mark.slow
def test_search_dse_and_optuna_record_studies(tiny_checkpoint, storage) -> None:
    import optuna

    runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                        "--storage", storage])
    common = ["--checkpoint", str(tiny_checkpoint), "--device", "quick", "--storage", storage]
    dse = runner.invoke(app, ["search", "--strategy", "dse", "--cost", "macs", "--objectives", "accuracy,macs",
                              "--delta", "0.0", "--max-iterations", "2", *common])
    assert dse.exit_code == 0, dse.output
    assert "iteration 1:" in dse.output and "chosen mode" in dse.output
    tpe = runner.invoke(app, ["search", "--strategy", "optuna", "--sampler", "random", "--trials", "4",
                              "--objectives", "accuracy,energy", *common])
    assert tpe.exit_code == 0, tpe.output
    assert "Pareto front" in tpe.output
    predictor = runner.invoke(app, ["search", "--strategy", "predictor", "--trials", "6", "--init-size", "3",
                                    "--batch", "3", "--objectives", "accuracy,macs", *common])
    assert predictor.exit_code == 0, predictor.output
    assert "round 1: fitted on 3, evaluated 3; held-out Kendall tau accuracy" in predictor.output
    assert "Pareto front" in predictor.output
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert any("@quick/dse-macs/delta=0.0," in name for name in studies)
    assert any("@quick/optuna-random/" in name for name in studies)
    assert any("@quick/predictor/" in name for name in studies)
    listing = runner.invoke(app, ["searches", "--storage", storage])
    assert listing.exit_code == 0 and "dse-macs" in listing.output and "optuna-random" in listing.output
    from subnetsearch.storage import Store

    assert [s.status for s in Store(storage).list_searches()] == ["finished"] * 3
    front = runner.invoke(app, ["front", "--device", "quick", "--objectives", "accuracy,macs", "--storage", storage])
    assert front.exit_code == 0 and "Pareto front (accuracy,macs) on quick" in front.output, front.output


@pytest.mark.slow
def test_best_mode_query_and_export(tiny_checkpoint, storage, tmp_path) -> None:
    import json

    import numpy as np
    import onnxruntime
    import torch

    from subnetsearch.search import materialized_model
    from subnetsearch.storage import Budget, Store

    runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                        "--storage", storage])
    common = ["--checkpoint", str(tiny_checkpoint), "--device", "quick", "--storage", storage]
    search = runner.invoke(app, ["search", "--strategy", "optuna", "--sampler", "random", "--trials", "6",
                                 "--objectives", "accuracy,macs", *common])
    assert search.exit_code == 0, search.output
    store = Store(storage)
    front_macs = sorted(e.macs for e in store.get_front("quick", "all"))
    budget = front_macs[len(front_macs) // 2]  # some stored front mode fits, not all do
    best = runner.invoke(app, ["best", "--device", "quick", "--max-macs", str(budget), "--storage", storage])
    assert best.exit_code == 0, best.output
    chosen = store.best_mode("quick", Budget(max_macs=budget)).best
    assert chosen.macs <= budget and chosen.mode_id in best.output and "subnetsearch export" in best.output
    assert f"mode JSON: {chosen.mode_json}" in best.output.splitlines()  # one line, never wrapped off a terminal
    as_json = runner.invoke(app, ["best", "--device", "quick", "--max-macs", str(budget), "--json", "--storage", storage])
    assert as_json.exit_code == 0 and json.loads(as_json.output)["best"]["mode_id"] == chosen.mode_id
    nothing = runner.invoke(app, ["best", "--device", "quick", "--max-macs", "1", "--json", "--storage", storage])
    assert nothing.exit_code == 1 and json.loads(nothing.output)["best"] is None
    listed = runner.invoke(app, ["searches", "--json", "--storage", storage])
    assert [s["status"] for s in json.loads(listed.output)] == ["finished"]
    front = runner.invoke(app, ["front", "--device", "quick", "--objectives", "all", "--json", "--storage", storage])
    assert sorted(e["macs"] for e in json.loads(front.output)) == front_macs
    none = runner.invoke(app, ["best", "--device", "quick", "--max-macs", "1", "--storage", storage])
    assert none.exit_code == 1 and "no stored mode for quick satisfies macs <= 1" in none.output
    assert "closest" in none.output
    bad = runner.invoke(app, ["best", "--device", "quick", "--min-accuracy", "95", "--storage", storage])
    assert bad.exit_code == 2 and "min_accuracy must be in [0, 1]" in bad.output
    # export: JSON with its measurement, and the materialized network as ONNX and TorchScript
    for name in ("mode.json", "mode.onnx", "mode.pt"):
        result = runner.invoke(app, ["export", chosen.mode_id[:8], "--device", "quick", "-o", str(tmp_path / name),
                                     "--storage", storage])
        assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "mode.json").read_text())
    assert document["mode_id"] == chosen.mode_id and document["metrics"]["macs"] == chosen.macs
    assert document["measurement"]["evaluation_settings"] == chosen.settings
    assert document["preprocessing"]["classes"] == ["class-0", "class-1", "class-2", "class-3"]
    model, shape = materialized_model(store, chosen)
    pixels = torch.rand(1, *shape) * 255  # the exported graphs take raw pixels and normalize them themselves
    expected = model((pixels / 255 - 0.5) / 0.25).detach().numpy()  # the synthetic set's mean and std
    session = onnxruntime.InferenceSession(str(tmp_path / "mode.onnx"))
    np.testing.assert_allclose(session.run(None, {"input": pixels.numpy()})[0], expected, rtol=1e-4, atol=1e-4)
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["subnetsearch.preprocessing"]) == document["preprocessing"]
    files = {"subnetsearch.preprocessing.json": ""}
    scripted = torch.jit.load(str(tmp_path / "mode.pt"), _extra_files=files)
    np.testing.assert_allclose(scripted(pixels).detach().numpy(), expected, atol=1e-4)
    assert json.loads(files["subnetsearch.preprocessing.json"]) == document["preprocessing"]
    unknown = runner.invoke(app, ["export", "zzzz", "--device", "quick", "-o", str(tmp_path / "x.onnx"),
                                  "--storage", storage])
    assert unknown.exit_code == 2 and "no stored mode 'zzzz'" in unknown.output
    suffix = runner.invoke(app, ["export", chosen.mode_id, "--device", "quick", "-o", str(tmp_path / "x.bin"),
                                 "--storage", storage])
    assert suffix.exit_code == 2 and "cannot tell the format" in suffix.output
    supernets = runner.invoke(app, ["supernets", "--storage", storage])
    assert supernets.exit_code == 0 and chosen.supernet_hash[:12] in supernets.output
    # a stored mode that does not fit its supernet's space (e.g. written by hand): refused clearly
    from dataclasses import replace

    foreign = replace(chosen, mode_id="feedfacefeedface", mode_json='{"space":"0000","values":{"x":1}}')
    store.put_evaluation(foreign)
    misfit = runner.invoke(app, ["export", "feedface", "--device", "quick", "-o", str(tmp_path / "f.onnx"),
                                 "--storage", storage])
    assert misfit.exit_code == 2 and "does not fit supernet" in misfit.output, misfit.output
    # the checkpoint file replaced by another network: refused, nothing written
    from subnetsearch.supernets import build_supernet
    from subnetsearch.supernets._checkpoint import save_checkpoint

    save_checkpoint(tiny_checkpoint, build_supernet({**json.loads(json.dumps(TINY)), "widths": [8, 8, 16]}), {},
                    {"name": "synthetic", "split_seed": 0}, {})
    replaced = runner.invoke(app, ["export", chosen.mode_id, "--device", "quick", "-o", str(tmp_path / "new.onnx"),
                                   "--storage", storage])
    assert replaced.exit_code == 2 and "the file was replaced" in replaced.output
    assert not (tmp_path / "new.onnx").exists()


@pytest.mark.parametrize("args, message", [
    (["--strategy", "anneal"], "unknown strategy"),
    (["--strategy", "optuna", "--sampler", "cma"], "unknown sampler"),
    (["--strategy", "optuna", "--objectives", "speed"], "unknown objective"),
])
def test_search_bad_inputs(tiny_checkpoint, storage, args, message) -> None:
    result = runner.invoke(app, ["search", "--checkpoint", str(tiny_checkpoint), "--storage", storage, *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_search_latency_on_a_remote_device_is_refused(tiny_checkpoint, storage) -> None:
    runner.invoke(app, ["devices", "add", "board", "--location", "ray-node", "--storage", storage])
    result = runner.invoke(app, ["search", "--device", "board", "--checkpoint", str(tiny_checkpoint),
                                 "--storage", storage])
    assert result.exit_code == 2 and "latency cannot be measured here" in result.output


@pytest.mark.slow
def test_latency_tables_built_here_imported_for_a_remote_device_and_searched_on(tiny_checkpoint, storage,
                                                                                tmp_path) -> None:
    from subnetsearch.storage import Store

    runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                        "--storage", storage])
    runner.invoke(app, ["devices", "add", "board", "--location", "ray-node", "--storage", storage])
    table_args = ["--checkpoint", str(tiny_checkpoint), "--storage", storage]
    built = runner.invoke(app, ["devices", "table", "quick", *table_args])
    assert built.exit_code == 0 and "measured latency table of quick" in built.output, built.output
    remote = runner.invoke(app, ["devices", "table", "board", *table_args])
    assert remote.exit_code == 2 and "import it here with --import-file" in remote.output
    search = ["search", "--strategy", "optuna", "--sampler", "random", "--trials", "3", "--objectives",
              "accuracy,latency", "--device", "board", *table_args]
    none = runner.invoke(app, [*search, "--latency", "predicted"])
    assert none.exit_code == 2 and "no latency table for device board" in none.output, none.output
    exported = tmp_path / "quick-table.json"
    assert runner.invoke(app, ["devices", "table", "quick", "--export-file", str(exported), *table_args]).exit_code == 0
    broken = tmp_path / "broken.json"
    broken.write_text('{"protocol": {}, "entries": {}, "overhead_ms": 0}')
    bad = runner.invoke(app, ["devices", "table", "board", "--import-file", str(broken), *table_args])
    assert bad.exit_code == 2 and "lacks" in bad.output and "layer configuration" in bad.output
    imported = runner.invoke(app, ["devices", "table", "board", "--import-file", str(exported), *table_args])
    assert imported.exit_code == 0 and "imported latency table of board" in imported.output
    result = runner.invoke(app, [*search, "--latency", "predicted"])
    assert result.exit_code == 0, result.output
    front = Store(storage).get_front("board", "accuracy,latency")
    assert front and all(e.latency["measured"] is False for e in front)
    measured = runner.invoke(app, search)
    assert measured.exit_code == 2 and "latency cannot be measured here" in measured.output


@pytest.mark.slow
def test_report_and_dashboard_commands(tiny_checkpoint, storage, tmp_path) -> None:
    import socket

    empty = runner.invoke(app, ["report", "-o", str(tmp_path / "none.html"), "--storage", storage])
    assert empty.exit_code == 1 and "nothing stored yet" in empty.output
    unknown = runner.invoke(app, ["report", "--device", "nowhere", "--storage", storage])
    assert unknown.exit_code == 2 and "unknown device 'nowhere'" in unknown.output
    runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                        "--storage", storage])
    runner.invoke(app, ["search", "--strategy", "optuna", "--sampler", "random", "--trials", "3", "--objectives",
                        "accuracy,macs", "--checkpoint", str(tiny_checkpoint), "--device", "quick", "--storage", storage])
    written = runner.invoke(app, ["report", "-o", str(tmp_path / "r.html"), "--storage", storage])
    assert written.exit_code == 0 and "1 device section" in written.output, written.output
    assert 'id="front-quick-macs"' in (tmp_path / "r.html").read_text()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = runner.invoke(app, ["dashboard", "--port", str(taken.getsockname()[1]), "--storage", storage])
    assert busy.exit_code == 2 and "cannot serve on 127.0.0.1" in busy.output, busy.output


@pytest.mark.parametrize("args, message", [
    (["--backend", "slurm"], "--backend must be local or ray"),
    (["--address", "127.0.0.1:6379"], "--address needs --backend ray"),
    (["--backend", "ray", "--workers", "0"], "--workers must be >= 1"),
    (["--backend", "ray", "--address", "no-port-here"], "bad Ray address 'no-port-here'"),
    (["--backend", "ray", "--address", "ray://127.0.0.1:notaport"], "bad Ray address"),
    # nothing listens on port 1: refused within seconds (Ray alone would retry for minutes)
    (["--backend", "ray", "--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"),
])
def test_search_bad_distributed_inputs_record_nothing(tiny_checkpoint, storage, args, message) -> None:
    from subnetsearch.storage import Store

    result = runner.invoke(app, ["search", "--checkpoint", str(tiny_checkpoint), "--storage", storage,
                                 "--cost", "macs", *args])
    assert result.exit_code == 2 and message in result.output, result.output
    store = Store(storage)
    try:
        assert store.list_searches() == [] and store.count_evaluations() == 0
    finally:
        store.dispose()


@pytest.mark.slow
def test_export_needs_only_the_checkpoint_and_scores_on_raw_images_what_was_measured(tmp_path) -> None:
    """Images resized to 12 and the 10x10 input cut from them (random resized crops in training, the
    centre in evaluation): the exported network on the centre crops of the raw pixels, as the
    recorded preprocessing says, scores exactly what the search measured."""
    import json
    import shutil

    import numpy as np
    import onnxruntime
    from PIL import Image

    from subnetsearch.data import DataSpec, load_data
    from subnetsearch.storage import Store
    from subnetsearch.supernets import load_checkpoint

    images = tmp_path / "images"
    for part in ("train", "val", "test"):
        for label in range(3):
            (images / part / f"c{label}").mkdir(parents=True)
            for index in range(6):
                pixels = np.full((14, 14), 40 + 70 * label, np.uint8)
                pixels[2 + index % 10, :] = 255 - 20 * index  # a little variety inside each class
                Image.fromarray(pixels, "L").save(images / part / f"c{label}" / f"{index}.png")
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    trained = runner.invoke(app, ["train", "--data", "imagefolder", "--data-root", str(images), "--depth", "8",
                                  "--widths", "8,16,16", "--groups", "1,2", "--batch-size", "6", "--epochs", "2",
                                  "--no-hflip", "--resize", "12", "--image-size", "10", "--min-crop-scale", "0.5",
                                  "--out", str(tmp_path / "run")])
    assert trained.exit_code == 0, trained.output
    recorded = load_checkpoint(tmp_path / "run" / "supernet.pt")
    assert recorded.arch["input_size"] == 10 and recorded.data["augment"] == "resized-crop"
    assert (recorded.data["resize"], recorded.data["min_crop_scale"], recorded.data["normalize"]) == (12, 0.5, "data")
    runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                        "--storage", storage])
    search = runner.invoke(app, ["search", "--strategy", "optuna", "--sampler", "random", "--trials", "3",
                                 "--objectives", "accuracy,macs", "--checkpoint", str(tmp_path / "run" / "supernet.pt"),
                                 "--device", "quick", "--storage", storage])
    assert search.exit_code == 0, search.output
    evaluation = Store(storage).get_front("quick", "all")[0]
    splits = load_data(DataSpec("imagefolder", str(images), hflip=False, resize=12, image_size=10))
    shutil.rmtree(images)  # the training images are gone: export needs only the checkpoint and the store
    out = tmp_path / "mode.onnx"
    result = runner.invoke(app, ["export", evaluation.mode_id, "--device", "quick", "-o", str(out), "--storage", storage])
    assert result.exit_code == 0, result.output
    session = onnxruntime.InferenceSession(str(out))
    assert splits.val.images.shape[-2:] == (12, 12)  # stored resized; the network sees the 10x10 centre
    raw = splits.val.images[..., 1:11, 1:11].float().numpy()  # raw pixels, resized and centre-cropped
    predictions = np.concatenate([session.run(None, {"input": raw[i:i + 1]})[0].argmax(1) for i in range(len(raw))])
    assert float((predictions == splits.val.labels.numpy()).mean()) == pytest.approx(evaluation.accuracy, abs=1e-6)
    metadata = json.loads(session.get_modelmeta().custom_metadata_map["subnetsearch.preprocessing"])
    assert metadata["classes"] == ["c0", "c1", "c2"] and metadata["input_shape"] == [1, 10, 10]
    assert metadata["resize"] == [12, 12] and metadata["center_crop"] == [10, 10]


@pytest.mark.slow
def test_sigterm_stops_a_server_cleanly_and_other_commands_with_130(tmp_path) -> None:
    import signal
    import time

    storage = f"sqlite:///{tmp_path / 'store.db'}"
    server = subprocess.Popen([sys.executable, "-m", "subnetsearch", "dashboard", "--port", "0", "--storage", storage],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (tmp_path / "store.db").exists():
        time.sleep(0.2)
    time.sleep(2.0)  # serving
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0 and "dashboard stopped" in out and "Traceback" not in err, (out, err)
    training = subprocess.Popen([sys.executable, "-m", "subnetsearch", "train", "--data", "synthetic", "--epochs", "500",
                                 "--depth", "8", "--widths", "8,16,16", "--out", str(tmp_path / "run")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while time.monotonic() < deadline + 60 and not (tmp_path / "run" / "train_log.jsonl").exists():
        time.sleep(0.2)
    training.send_signal(signal.SIGTERM)
    out, err = training.communicate(timeout=30)
    assert training.returncode == 130 and "error: interrupted by SIGTERM" in err and "Traceback" not in err, (out, err)
