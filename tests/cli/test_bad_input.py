"""Bad input against the CLI: for each command and input, exit code 2, one `error:` line that names
the problem, no traceback, and the store unchanged (its dump checksum before and after)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.supernets import save_checkpoint


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A store holding one device, a tiny checkpoint, and a read-only directory."""
    from subnetsearch.devices import Device, LatencyProtocol
    from subnetsearch.storage import Store
    from subnetsearch.supernets import build_supernet
    from tests.conftest import TINY_ARCH

    folder = tmp_path_factory.mktemp("bad")
    checkpoint = folder / "tiny.pt"
    save_checkpoint(checkpoint, build_supernet(TINY_ARCH), {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{folder / 'store.db'}"
    store = Store(url)
    store.add_device(Device("quick", protocol=LatencyProtocol(runtime="eager", threads=1, repeats=1)))
    store.add_device(Device("board", location="imported"))
    store.dispose()
    _write_bad_checkpoints(folder, build_supernet(TINY_ARCH))
    values = {name: 1 for name in build_supernet(TINY_ARCH).full_mode().values}
    (folder / "bool-mode.json").write_text(json.dumps({**values, "layer1.0.conv1": True}))
    (folder / "not-a-db.db").write_text("this is not a database\n")
    _store_of_a_newer_optuna(folder / "newer-optuna.db")
    (folder / "a-file").write_text("x")
    return folder, checkpoint, url


# Well-formed checkpoints (valid pickle, format and content hash) whose content is wrong.
BAD_CHECKPOINTS = {
    "arch-list": ({"arch": [1, 2]}, "field 'arch' must be a mapping, got list"),
    "unknown-family": ({"arch": {"family": "nope"}}, "unknown supernet family 'nope'"),
    "arch-field-type": ({"arch": {"depth": "x"}}, "architecture field 'depth' must be int, got 'x'"),
    "arch-bool-groups": ({"arch": {"group_choices": [1, True]}}, "group counts must be positive integers"),
    "arch-unknown-field": ({"arch": {"bogus": 1}}, "unknown architecture field(s) ['bogus']"),
    "data-unknown-key": ({"data": {"name": "synthetic", "colour": 1}}, "unknown data field(s) ['colour']"),
    "data-unknown-name": ({"data": {"name": "imagenet"}}, "unknown data set 'imagenet'"),
    "data-type": ({"data": {"name": "synthetic", "val_size": "many"}}, "data field 'val_size' must be int"),
    "recipe-str": ({"recipe": "x"}, "field 'recipe' must be a mapping, got str"),
    "state-list": ({"state_dict": [1, 2]}, "field 'state_dict' must map parameter names to tensors"),
    "state-shapes": ({"state_dict": "zeros"}, "does not fit its architecture"),
}


def _write_bad_checkpoints(folder: Path, supernet) -> None:
    import torch

    from subnetsearch.supernets._checkpoint import FORMAT, _canonical, content_hash

    good_state = {k: v.clone() for k, v in supernet.state_dict().items()}
    for name, (change, _) in BAD_CHECKPOINTS.items():
        meta = {"arch": dict(supernet.arch), "recipe": {}, "data": {"name": "synthetic", "split_seed": 0}, "metrics": {}}
        state = good_state
        for key, value in change.items():
            if key == "state_dict":
                state = {k: torch.zeros(1) for k in good_state} if value == "zeros" else value
            elif key == "arch" and isinstance(value, dict) and "family" not in value:
                meta["arch"] = {**meta["arch"], **value}
            else:
                meta[key] = value
        try:
            digest = content_hash(state, meta)
        except Exception:  # not tensors: no hash can be computed, the loader refuses before checking it
            digest = "0" * 64
        torch.save({"format": FORMAT, **{k: _canonical(v) for k, v in meta.items()}, "state_dict": state,
                    "hash": digest}, folder / f"bad-{name}.pt")


def _store_of_a_newer_optuna(path: Path) -> None:
    import optuna

    from subnetsearch.storage import Store

    Store(f"sqlite:///{path}").dispose()
    optuna.storages.RDBStorage(f"sqlite:///{path}").engine.dispose()  # Optuna's tables, as a search creates them
    connection = sqlite3.connect(path)
    connection.execute("UPDATE alembic_version SET version_num = 'v9.0.0.a'")
    connection.execute("UPDATE version_info SET library_version = '9.0.0'")
    connection.commit()
    connection.close()


def _dump(database: Path) -> str:
    connection = sqlite3.connect(database)
    try:
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()
    finally:
        connection.close()


TRAIN = ["train", "--data", "synthetic", "--depth", "8", "--widths", "8,16,16", "--out", "{folder}/run"]
SEARCH = ["search", "--device", "quick", "--checkpoint", "{checkpoint}", "--storage", "{url}"]
CASES = [
    # options checked before the store is opened for writing
    ([*SEARCH, "--strategy", "optuna", "--objectives", ""], "no objectives given"),
    ([*SEARCH, "--strategy", "optuna", "--objectives", "accuracy,accuracy"], "name one twice"),
    ([*SEARCH, "--strategy", "optuna", "--objectives", "accuracy,speed"], "unknown objective(s) ['speed']"),
    ([*SEARCH, "--strategy", "optuna", "--objectives", "macs"], "must include accuracy"),
    ([*SEARCH, "--strategy", "optuna", "--min-accuracy", "nan"], "min_accuracy must be in [0, 1], got nan"),
    ([*SEARCH, "--strategy", "optuna", "--max-latency-ms", "-1"], "max_latency_ms must be a positive"),
    ([*SEARCH, "--strategy", "optuna", "--trials", "0"], "trials must be >= 1, got 0"),
    ([*SEARCH, "--strategy", "optuna", "--sampler", "cma"], "unknown sampler 'cma'"),
    ([*SEARCH, "--strategy", "predictor", "--init", "grid"], "init must be one of ('random', 'dse')"),
    ([*SEARCH, "--strategy", "predictor", "--batch", "0"], "batch must be >= 1, got 0"),
    ([*SEARCH, "--strategy", "predictor", "--trials", "5", "--init-size", "6"], "must not exceed the budget (5)"),
    ([*SEARCH, "--strategy", "predictor", "--trials", "0"], "trials must be >= 1, got 0"),
    ([*SEARCH, "--strategy", "predictor", "--objectives", "accuracy,macs", "--max-latency-ms", "1"],
     "a latency budget needs latency among the objectives"),
    ([*SEARCH, "--strategy", "dse", "--delta", "nan"], "delta must be in [0, 1], got nan"),
    ([*SEARCH, "--strategy", "dse", "--cost", "speed"], "unknown cost 'speed'"),
    ([*SEARCH, "--strategy", "dse", "--max-iterations", "0"], "max_iterations must be >= 1"),
    # a strategy's options are its own: one it does not take is refused, naming those it does
    ([*SEARCH, "--strategy", "dse", "--sampler", "tpe"], "strategy 'dse' takes no option 'sampler'"),
    ([*SEARCH, "--strategy", "optuna", "--set", "delta"], "--set takes KEY=VALUE, got 'delta'"),
    ([*SEARCH, "--strategy", "grid"], "unknown strategy 'grid'; choose one of dse, optuna, predictor"),
    ([*SEARCH, "--workers", "0"], "--workers must be >= 1"),
    ([*SEARCH, "--calibration-batches", "-1"], "--calibration-batches must be >= 0, got -1"),
    ([*SEARCH, "--eval-batches", "0"], "--eval-batches must be >= 1, got 0"),
    (["run", "--eval-batches", "0", "--storage", "{url}"], "--eval-batches must be >= 1, got 0"),
    ([*SEARCH, "--latency", "guessed"], "--latency must be measured or predicted"),
    ([*SEARCH, "--accelerator", "tpu"], "accelerator must be one of auto, cpu, cuda"),
    (["dashboard", "--port", "70000", "--storage", "{url}"], "--port must be in 0..65535"),
    (["dashboard", "--port", "-1", "--storage", "{url}"], "--port must be in 0..65535"),
    # output paths and formats, refused before any work
    (["best", "--device", "quick", "-o", "{folder}/x.json", "--format", "onnx", "--storage", "{url}"],
     "'x.json' says json but the format asked for is onnx"),
    (["best", "--device", "quick", "-o", "{folder}", "--storage", "{url}"], "cannot tell the format"),
    (["export", "abc", "--device", "quick", "-o", "{folder}/dir.json/", "--storage", "{url}"], "is a directory"),
    (["export", "abc", "--device", "quick", "-o", "{folder}/a-file/mode.json", "--storage", "{url}"],
     "a-file is not a directory"),
    (["report", "-o", "{folder}", "--storage", "{url}"], "is a directory"),
    (["report", "-o", "/proc/subnetsearch-report.html", "--storage", "{url}"], "/proc"),
    # a mode-id prefix reaching SQL LIKE is literal, not a wildcard
    (["export", "%", "--device", "quick", "-o", "{folder}/m.json", "--storage", "{url}"], "no stored mode '%'"),
    # the main job: options checked before the store is opened or anything is computed
    (["run", "--epochs", "0", "--storage", "{url}"], "--epochs must be >= 1, got 0"),
    (["run", "--trials", "-1", "--storage", "{url}"], "trials must be >= 0, got -1"),
    (["run", "--strategy", "dse+grid", "--storage", "{url}"], "unknown strategy 'grid'"),
    # a checkpoint this host cannot serve is named before the device is looked at (an imported one)
    (["run", "--device", "board", "--checkpoint", "{folder}/bad-unknown-family.pt", "--storage", "{url}"],
     "unknown supernet family 'nope'"),
    (["run", "--random-modes", "-2", "--storage", "{url}"], "random_modes must be >= 0, got -2"),
    (["run", "--delta", "nan", "--storage", "{url}"], "delta must be in [0, 1], got nan"),
    (["run", "--report", "{folder}", "--storage", "{url}"], "is a directory"),
    # training commands: options and output folders checked before any data is read or work done
    ([*TRAIN, "--image-size", "16"], "--image-size applies to image folders"),
    ([*TRAIN, "--resize", "16"], "--resize applies to image folders"),
    ([*TRAIN, "--augment", "cutmix"], "unknown augmentation (--augment) 'cutmix'"),
    ([*TRAIN, "--min-crop-scale", "1.5"], "--min-crop-scale must be in (0, 1]"),
    ([*TRAIN, "--normalize", "0.5/-1"], "every std > 0"),
    (["train", "--data", "imagefolder", "--data-root", "{folder}", "--resize", "32", "--out", "{folder}/run"],
     "give --image-size (the input) too"),
    (["train", "--data", "imagefolder", "--data-root", "{folder}", "--channels", "2", "--out", "{folder}/run"],
     "must be 1 (grayscale) or 3 (RGB), got 2"),
    ([*TRAIN, "--max-steps-per-epoch", "0"], "max_steps_per_epoch must be >= 1, got 0"),
    (["train", "--data", "synthetic", "--out", "/proc/subnetsearch-run"], "/proc"),
    (["train", "--data", "synthetic", "--out", "{folder}/a-file"], "a-file is not a directory"),
    (["lasso", "base", "--data", "synthetic", "--out", "{folder}/a-file/run"], "a-file is not a directory"),
    (["lasso", "base", "--data", "synthetic", "--max-steps-per-epoch", "0", "--out", "{folder}/run"],
     "max_steps_per_epoch must be >= 1"),
    (["ddi", "train", "--data", "synthetic", "--backbone-epochs", "0", "--out", "{folder}/run"], "epochs must be >= 1"),
    (["ddi", "train", "--data", "synthetic", "--out", "/proc/subnetsearch-ddi"], "/proc"),
    (["devices", "add", "other", "--runtime", "tflite", "--storage", "{url}"], "runtime must be one of"),
    (["devices", "add", "other", "--threads", "0", "--storage", "{url}"], "threads must be >= 1"),
    (["devices", "add", "quick", "--storage", "{url}"], "device 'quick' exists already"),
    # group counts: a boolean is not a group count
    (["devices", "measure", "quick", "--checkpoint", "{checkpoint}", "--modes", "{folder}/bool-mode.json",
      "--storage", "{url}"], "knob 'layer1.0.conv1': True is not one of [1, 2, 4, 8]"),
    # storage URLs
    (["searches", "--storage", ""], "the storage URL is empty"),
    (["searches", "--storage", "sqlite:///{folder}/missing-dir/x.db"], "missing-dir does not exist"),
    (["searches", "--storage", "sqlite:///{folder}/not-a-db.db"], "file is not a database"),
    (["searches", "--storage", "postgresql+psycopg://u@127.0.0.1:notaport/db"], "storage"),
    (["searches", "--storage", "sqlite:///{folder}/newer-optuna.db"], "written by a newer optuna (9.0.0)"),
    (["devices", "add", "other", "--storage", "sqlite:///file:{folder}/store.db?mode=ro&uri=true"],
     "attempt to write a readonly database"),
]


# every command that reads a checkpoint, with every kind of wrong content
CHECKPOINT_COMMANDS = {
    "devices measure": ["devices", "measure", "quick"],
    "devices table": ["devices", "table", "quick"],
    "search": ["search", "--device", "quick"],
    "run": ["run", "--device", "quick", "--trials", "0", "--dse-iterations", "0", "--report", "{folder}/r.html"],
}
CASES += [([*command, "--checkpoint", f"{{folder}}/bad-{name}.pt", "--storage", "{url}"], message)
          for command in CHECKPOINT_COMMANDS.values() for name, (_, message) in BAD_CHECKPOINTS.items()]


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:1] + a[-4:-2]) + f" #{i}" for i, (a, _) in
                                                       enumerate(CASES)])
def test_bad_input_is_refused_clearly_and_changes_nothing(workspace, args, message) -> None:
    folder, checkpoint, url = workspace
    (folder / "dir.json").mkdir(exist_ok=True)
    filled = [a.format(folder=folder, checkpoint=checkpoint, url=url) for a in args]
    before = _dump(folder / "store.db")
    def files() -> list[str]:  # SQLite's -wal/-shm companions come and go with connections
        return sorted(p.name for p in folder.iterdir() if not p.name.endswith(("-wal", "-shm")))

    files_before = files()
    result = CliRunner().invoke(app, filled)
    output = result.output
    assert result.exit_code == 2, (output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in " ".join(output.split()), output
    assert _dump(folder / "store.db") == before  # the store is unchanged
    assert files() == files_before  # nothing written, no database created
