"""A search killed with SIGKILL mid-way and started again with the same name resumes: no evaluation
lost or duplicated, no trial left running, the front correct; on SQLite and PostgreSQL."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from subnetsearch.devices import Device, LatencyProtocol
from subnetsearch.storage import Store
from subnetsearch.supernets import save_checkpoint

pytestmark = pytest.mark.slow  # the full tier (pytest --full); see pyproject.toml


def _search(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "subnetsearch", "search", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize("strategy", ["optuna", "dse"])
def test_a_killed_search_resumes_without_losing_or_duplicating(store_url, tmp_path, tiny_supernet, strategy,
                                                                check_fronts) -> None:
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    store = Store(store_url)
    store.add_device(Device("quick", protocol=LatencyProtocol(runtime="eager", threads=1, repeats=1)))
    own = (["--cost", "macs", "--delta", "0.0", "--max-iterations", "3"] if strategy == "dse" else
           ["--sampler", "random", "--trials", "16"])  # each strategy's own options
    args = ["--strategy", strategy, "--name", "resumable", "--checkpoint", str(checkpoint), "--device", "quick",
            "--storage", store_url, "--objectives", "accuracy,macs", *own, "--calibration-batches", "1"]
    first = _search(args)
    deadline = time.monotonic() + 120
    while store.count_evaluations() < 6:  # let it store some evaluations, then kill it mid-search
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "the search stored nothing in 120 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = store.count_evaluations()
    assert store.get_search("resumable").status == "running"  # what a killed search leaves behind
    second = _search(args)
    output = second.communicate(timeout=300)[0]
    assert second.returncode == 0, output
    assert store.get_search("resumable").status == "finished"
    study = optuna.load_study(study_name="resumable", storage=store_url)
    states = optuna.trial.TrialState
    everything = study.get_trials(deepcopy=False)
    assert not [t for t in everything if t.state == states.RUNNING]
    # a trial killed while its parameters were being set has no mode and no evaluation: marked FAIL;
    # a proposal of a mode the study had is recorded PRUNED, pointing at the trial that has it
    assert all(t.state == states.COMPLETE or t.state == states.FAIL and "mode_id" not in t.user_attrs
               or t.state == states.PRUNED and "duplicate_of" in t.user_attrs for t in everything)
    trials = [t for t in everything if t.state == states.COMPLETE]
    modes = [t.user_attrs["mode_id"] for t in trials]
    # multi-fidelity (the default): every trial's mode has its first look stored, and its full evaluation
    # where it was promoted; each (mode, fidelity) stored once, nothing lost, nothing outside the trials
    stored = store.list_evaluations("quick")
    at = {(evaluation.mode_id, evaluation.settings.get("fidelity", "full")) for evaluation in stored}
    assert len(at) == len(stored) == store.count_evaluations() >= killed_at
    assert {mode_id for mode_id, _ in at} == set(modes)
    promoted = {t.user_attrs["mode_id"] for t in trials if t.user_attrs.get("fidelity", "full") == "full"}
    assert {mode_id for mode_id, fidelity in at if fidelity == "full"} == promoted
    if strategy == "optuna":
        assert len(trials) == 16 == len(set(modes))
        # the same modes, in the same order, as an uninterrupted run with the same seed
        clean = _search([*args[:3], "clean", *args[4:]])
        clean_output = clean.communicate(timeout=300)[0]
        assert clean.returncode == 0, clean_output
        uninterrupted = optuna.load_study(study_name="clean", storage=store_url)
        assert [t.user_attrs["mode_id"] for t in uninterrupted.get_trials(states=(states.COMPLETE,))] == modes
    else:
        assert len(modes) == len(set(modes))  # the resumed DSE re-walked its trajectory without re-recording
        assert "chosen mode" in output
    check_fronts(store)
    store.dispose()


def test_sigterm_ends_a_search_cleanly_as_interrupted_and_it_resumes(tmp_path, tiny_supernet) -> None:
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, tiny_supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'term.db'}"
    store = Store(url)
    store.add_device(Device("quick", protocol=LatencyProtocol(runtime="eager", threads=1, repeats=1)))
    args = ["--strategy", "optuna", "--name", "termed", "--checkpoint", str(checkpoint), "--device", "quick",
            "--storage", url, "--objectives", "accuracy,macs", "--sampler", "random", "--trials", "16",
            "--calibration-batches", "1"]
    first = _search(args)
    deadline = time.monotonic() + 120
    while store.count_evaluations() < 3:
        assert first.poll() is None, first.communicate()[0]
        assert time.monotonic() < deadline, "the search stored nothing in 120 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=60)[0]
    assert first.returncode == 130, output
    assert "interrupted by SIGTERM" in output and "Traceback" not in output
    record = store.get_search("termed")
    assert record.status == "interrupted" and "SIGTERM" in record.summary["error"]
    second = _search(args)
    assert second.wait(timeout=300) == 0, second.communicate()[0]
    assert store.get_search("termed").status == "finished"
    store.dispose()
