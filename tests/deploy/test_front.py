"""A device's front in one artifact (`export --front`) run by `subnetsearch.deploy.DynamicModel`: for
every form and every family that exports, each mode's outputs equal its static export on the same
runtime; the manifest round-trips; `select` answers what the store's `best` answers; the module runs
where torch cannot be imported; bad artifacts, modes and budgets are refused by name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.deploy import OBJECTIVES, DeployError, DynamicModel, Manifest
from subnetsearch.devices import get_runtime
from subnetsearch.errors import InputError
from subnetsearch.pareto import SENSES
from subnetsearch.storage import Budget, Store

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
FAMILIES = ("wenet", "nested")
# (artifact name, --format, the runtime its static export is compared on)
# (the ONNX file in the fast tier; the other forms, whose exports take longer, in the full tier)
FORMS = [("front.onnx", None, "onnxruntime"),
         *(pytest.param(*form, marks=pytest.mark.slow, id=form[0]) for form in (
             ("front.pte", None, "executorch"), ("front.xml", None, "openvino"), ("onnx-dir", "onnx", "onnxruntime"),
             ("openvino-dir", "openvino", "openvino"), ("executorch-dir", "executorch", "executorch")))]


def _needs(runtime: str) -> None:
    missing = get_runtime(runtime).missing()
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="module", params=FAMILIES)
def searched(request, trained, tmp_path_factory) -> tuple[str, Path, list[str]]:
    """A store holding a search of a tiny trained supernet on device `edge` (ONNX Runtime), and
    stored modes of different MACs (a tiny supernet's front may be one mode)."""
    folder = tmp_path_factory.mktemp(f"front-{request.param}")
    storage = f"sqlite:///{folder / 'store.db'}"
    added = runner.invoke(app, ["devices", "add", "edge", "--runtime", "onnxruntime", "--threads", "1",
                                "--repeats", "1", "--storage", storage])
    assert added.exit_code == 0, added.output
    searched = runner.invoke(app, ["search", "--checkpoint", str(trained(request.param) / "supernet.pt"),
                                   "--strategy", "optuna", "--sampler", "random", "--trials", "6", "--fidelity", "full",
                                   "--objectives", "accuracy,latency", "--device", "edge", "--storage", storage])
    assert searched.exit_code == 0, searched.output
    store = Store(storage)
    by_macs = {e.macs: e.mode_id for e in store.list_evaluations("edge")}
    store.dispose()
    modes = [by_macs[m] for m in sorted(by_macs, reverse=True)][:4]  # several modes that compute differently
    assert len(modes) >= 2
    return storage, folder, modes


def _static(runtime: str, path: Path):
    """A static single-mode export, run as a deployment runs it."""
    run = get_runtime(runtime).load(path, threads=1)
    return lambda pixels: np.asarray(run(__import__("torch").from_numpy(pixels)))


@pytest.mark.parametrize(("name", "format", "runtime"), FORMS)
def test_every_mode_of_the_front_artifact_equals_its_static_export(searched, name, format, runtime) -> None:
    _needs(runtime)
    storage, folder, modes = searched
    out = folder / name
    args = ["export", "--modes", ",".join(m[:8] for m in modes), "--device", "edge", "-o", str(out), "--storage", storage]
    exported = runner.invoke(app, [*args, *(["--format", format] if format else [])])
    assert exported.exit_code == 0, exported.output
    model = DynamicModel.load(out, threads=1)
    assert sorted(model.modes) == sorted(modes)
    accuracies = [model.info(mode).metrics["accuracy"] for mode in model.modes]
    assert accuracies == sorted(accuracies, reverse=True)  # most accurate first
    pixels = np.random.default_rng(0).uniform(0, 255, model.manifest.input_shape).astype(np.float32)
    suffix = get_runtime(runtime).suffixes[0]
    outputs = {}
    for mode in model.modes:
        single = folder / f"{name}-{mode[:8]}{suffix}"
        static = runner.invoke(app, ["export", mode, "--device", "edge", "-o", str(single), "--storage", storage])
        assert static.exit_code == 0, static.output
        model.switch(mode)
        assert model.mode == mode
        outputs[mode] = model(pixels)
        np.testing.assert_allclose(outputs[mode], _static(runtime, single)(pixels), rtol=1e-5, atol=1e-5)
    assert len({o.tobytes() for o in outputs.values()}) == len(outputs)  # the modes really differ
    model.switch(model.modes[0])  # switching back gives the first mode's outputs again
    np.testing.assert_array_equal(model(pixels), outputs[model.modes[0]])


@pytest.mark.slow
def test_artifacts_of_one_name_in_one_folder_keep_their_own_manifests(searched, tmp_path) -> None:
    _needs("executorch")
    _needs("openvino")
    storage, _, modes = searched
    for name, chosen in (("front.pte", modes[:2]), ("front.xml", modes[-2:])):
        exported = runner.invoke(app, ["export", "--modes", ",".join(chosen), "--device", "edge",
                                       "-o", str(tmp_path / name), "--storage", storage])
        assert exported.exit_code == 0, exported.output
    assert DynamicModel.load(tmp_path / "front.pte").manifest.form == "executorch"
    assert set(DynamicModel.load(tmp_path / "front.pte").modes) == set(modes[:2])
    assert set(DynamicModel.load(tmp_path / "front.xml").modes) == set(modes[-2:])


def test_the_manifest_round_trips_and_select_answers_what_best_answers(searched) -> None:
    storage, folder, _ = searched
    out = folder / "select.onnx"
    assert runner.invoke(app, ["export", "--front", "--device", "edge", "-o", str(out), "--storage", storage]).exit_code == 0
    model = DynamicModel.load(out)
    manifest = model.manifest
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert manifest.device["name"] == "edge" and manifest.supernet_hash and manifest.rule
    store = Store(storage)
    assert manifest.preprocessing == store.get_supernet(manifest.supernet_hash).preprocessing
    # the front's modes, each with the figures and intervals the store answers `best` from
    candidates = store.best_candidates("edge")
    assert sorted(model.modes) == sorted(row.mode_id for row, _ in candidates)
    for row, figure in candidates:
        candidate = manifest.entry(row.mode_id).candidate
        assert (dict(candidate.values), dict(candidate.low), dict(candidate.high)) == \
            (dict(figure.values), dict(figure.low), dict(figure.high))
    entries = manifest.modes
    latencies = sorted(e.high["latency"] for e in entries)
    accuracies = sorted(e.low["accuracy"] for e in entries)
    budgets = [{}, *({"max_latency_ms": value} for value in latencies), {"max_latency_ms": latencies[0] * 0.5},
               *({"min_accuracy": value} for value in accuracies), {"min_accuracy": 1.0},
               {"max_latency_ms": latencies[-1], "min_accuracy": accuracies[0]}]
    for budget in budgets:
        for objective in ("accuracy", "latency", "macs"):
            best = store.best_mode("edge", Budget(**budget), objective).best
            assert model.select(**budget, objective=objective) == (best.mode_id if best else None), (budget, objective)
    assert model.select(max_latency_ms=latencies[0] * 0.5) is None  # nothing that fast: no answer
    store.dispose()


def test_deploy_runs_where_torch_cannot_be_imported(searched) -> None:
    storage, folder, modes = searched
    out = folder / "notorch.onnx"
    assert runner.invoke(app, ["export", "--modes", ",".join(modes), "--device", "edge", "-o", str(out),
                               "--storage", storage]).exit_code == 0
    script = f"""
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process")
sys.meta_path.insert(0, NoTorch())
import numpy as np
from subnetsearch.deploy import DynamicModel
model = DynamicModel.load({str(out)!r})
pixels = np.full(model.manifest.input_shape, 128, np.float32)
for mode in model.modes:
    model.switch(mode)
    assert model(pixels).shape[0] == pixels.shape[0]
assert model.select() == model.modes[0]
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
print("ran", len(model.modes), "modes without torch")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "without torch" in done.stdout


def test_bad_artifacts_modes_and_budgets_are_refused_by_name(searched, tmp_path) -> None:
    storage, folder, _ = searched
    out = folder / "bad.onnx"
    assert runner.invoke(app, ["export", "--front", "--device", "edge", "-o", str(out), "--storage", storage]).exit_code == 0
    model = DynamicModel.load(out)
    with pytest.raises(DeployError, match="no mode of this artifact is 'zzzz'"):
        model.switch("zzzz")
    with pytest.raises(InputError, match="max_latency_ms must be a positive number"):
        model.select(max_latency_ms=-1)
    with pytest.raises(InputError, match="min_accuracy must be in"):
        model.select(min_accuracy=2)
    with pytest.raises(InputError, match="unknown objective"):
        model.select(objective="speed")
    with pytest.raises(DeployError, match="4-d NCHW"):
        model(np.zeros((3, 3), np.float32))
    with pytest.raises(DeployError, match="no front artifact"):
        DynamicModel.load(tmp_path / "absent.onnx")
    single = tmp_path / "one.onnx"
    assert runner.invoke(app, ["export", model.modes[0], "--device", "edge", "-o", str(single),
                               "--storage", storage]).exit_code == 0
    with pytest.raises(DeployError, match="no subnetsearch manifest"):
        DynamicModel.load(single)
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(out.read_bytes()[:1000])
    with pytest.raises(DeployError, match="not an ONNX model"):
        DynamicModel.load(damaged)
    text = json.loads(model.manifest.to_json())
    with pytest.raises(DeployError, match="manifest version 99"):
        Manifest.from_json(json.dumps({**text, "version": 99}))
    with pytest.raises(DeployError, match="not a subnetsearch front manifest"):
        Manifest.from_json("{}")
    # the command line: refusals name the problem, nothing is written
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [(["export", "--front", "-o", str(taken)], "is not an empty folder"),
             (["export", "abc", "--front", "-o", str(tmp_path / "x.onnx")], "not both"),
             (["export", "--modes", ",", "-o", str(tmp_path / "x.onnx")], "--modes names no mode"),
             (["export", "--modes", "zzzz", "-o", str(tmp_path / "x.onnx")], "no stored mode 'zzzz'"),
             (["export", "--front", "--format", "openvino", "-o", str(tmp_path / "x.onnx")], "says onnx"),
             (["export", "--front", "--format", "json", "-o", str(tmp_path / "dir")], "not 'json'")]
    for args, message in cases:
        result = runner.invoke(app, [*args, "--device", "edge", "--storage", storage])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["one.onnx", "damaged.onnx", "taken"])
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    runner.invoke(app, ["devices", "add", "edge", "--runtime", "onnxruntime", "--storage", empty])
    nothing = runner.invoke(app, ["export", "--front", "--device", "edge", "-o", str(tmp_path / "n.onnx"),
                                  "--storage", empty])
    assert nothing.exit_code == 2 and "nothing stored for device edge" in nothing.output


def test_the_readme_deployment_example_runs_beside_a_front_file(searched, tmp_path, monkeypatch) -> None:
    storage, _, modes = searched
    [example] = [block for block in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
                 if "DynamicModel.load(" in block]
    exported = runner.invoke(app, ["export", "--modes", ",".join(modes), "--device", "edge",
                                   "-o", str(tmp_path / "front.onnx"), "--storage", storage])
    assert exported.exit_code == 0, exported.output
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "__readme__"}
    exec(compile(example, "README.md deployment example", "exec"), scope)  # noqa: S102 - our own README
    assert scope["model"].mode in modes and scope["logits"].shape[0] == scope["model"].manifest.input_shape[0]


def test_the_budget_rule_has_one_set_of_objectives() -> None:
    assert dict(OBJECTIVES) == dict(SENSES)
