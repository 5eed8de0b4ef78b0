"""A DDI network goes through the same evaluator, search, store and query as the other families:
its cost is the mean per-sample MACs of the evaluated samples, with their distribution stored."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from subnetsearch.cli import app
from subnetsearch.devices import Device, LatencyProtocol, export_formats
from subnetsearch.search import EvaluationSettings, evaluate_mode, materialized_model
from subnetsearch.storage import Store
from subnetsearch.supernets import ArchError, build_supernet, save_checkpoint
from tests.conftest import randomize_batchnorm

ARCH = {"family": "ddi-cifar-resnet", "depth": 14, "widths": [8, 16, 16], "input_size": 12, "num_classes": 4,
        "exits": True, "budgets": [0.7, 0.85, 1.0]}
QUICK = Device("quick", "host", LatencyProtocol(runtime="eager", threads=1, repeats=1, warmup=1, min_run_time=0.01))


def _supernet():
    supernet = build_supernet(ARCH)
    randomize_batchnorm(supernet)
    with torch.no_grad():  # gates that decide differently for different samples
        supernet.network.layer_out.bias.fill_(0.0)
        supernet.network.layer_out.weight.normal_(0, 30)
    return supernet.eval()


def test_evaluation_stores_the_mean_per_sample_cost_and_its_distribution(tiny_data) -> None:
    supernet = _supernet()
    settings = EvaluationSettings(calibration_batches=1, calibration_batch_size=32)
    full = evaluate_mode(supernet, supernet.full_mode(), tiny_data, QUICK, settings)
    tight = evaluate_mode(supernet, supernet.make_mode({"threshold": 0.5, "budget": 0.7}), tiny_data, QUICK, settings)
    for metrics in (full, tight):
        profile = metrics.cost_profile
        assert profile["samples"] == len(tiny_data.val)
        assert metrics.macs == round(profile["mean_macs"])
        assert profile["min_macs"] <= profile["p50_macs"] <= profile["max_macs"]
        assert metrics.latency is not None and metrics.latency.ms > 0
        assert metrics.latency.samples == min(32, len(tiny_data.val))  # per sample over real validation images
    assert tight.macs <= 0.7 * supernet.plain_macs or tight.cost_profile["over_budget"] > 0
    assert sum(tight.cost_profile["exits"]) == len(tiny_data.val) and tight.cost_profile["exits"][-1] < len(
        tiny_data.val)  # some samples answered early
    assert full.energy_mj > tight.energy_mj


def test_an_input_dependent_mode_is_timed_eagerly_on_any_device(tiny_data) -> None:
    supernet = _supernet()
    traced = Device("traced", "host", LatencyProtocol(runtime="optimized", threads=1, repeats=1, warmup=1,
                                                      min_run_time=0.01))
    metrics = evaluate_mode(supernet, supernet.full_mode(), tiny_data, traced, EvaluationSettings(calibration_batches=0))
    latency = metrics.latency.to_dict()
    assert latency["runtime"] == "eager" and latency["threads"] == 1  # the device's protocol, but eager
    assert latency["samples"] == min(32, len(tiny_data.val))


def test_knobs_and_bad_architectures() -> None:
    supernet = _supernet()
    assert [k.name for k in supernet.space.knobs] == ["threshold", "budget"]
    assert supernet.describe(supernet.full_mode()) == "mgl2s gates > 0.5, no budget"
    assert supernet.mode_named("uniform:2") is None  # no group counts: not a mode name it knows
    for change, message in [({"budgets": [0.01, 1.0]}, "below the cheapest first exit"),
                            ({"gating": "random"}, "gating must be one of")]:
        with pytest.raises(ArchError, match=message):
            build_supernet({**ARCH, **change})


@pytest.mark.slow
def test_search_store_and_query_a_ddi_checkpoint(tmp_path) -> None:
    supernet = _supernet()
    path = tmp_path / "ddi.pt"
    save_checkpoint(path, supernet, {}, {"name": "synthetic", "split_seed": 0}, {})
    url = f"sqlite:///{tmp_path / 'ddi.db'}"
    runner = CliRunner()
    runner.invoke(app, ["devices", "add", "quick", "--runtime", "eager", "--threads", "1", "--repeats", "1",
                        "--storage", url])
    result = runner.invoke(app, ["search", "--checkpoint", str(path), "--device", "quick", "--strategy", "optuna",
                                 "--trials", "4", "--objectives", "accuracy,macs", "--storage", url])
    assert result.exit_code == 0, result.output
    store = Store(url)
    try:
        stored = store.list_evaluations("quick")
        assert stored and all(e.cost_profile and e.macs == round(e.cost_profile["mean_macs"]) for e in stored)
        assert {tuple(sorted(json.loads(e.mode_json)["values"])) for e in stored} == {("budget", "threshold")}
    finally:
        store.dispose()
    best = runner.invoke(app, ["best", "--device", "quick", "--objective", "macs", "--min-accuracy", "0",
                               "--storage", url])
    assert best.exit_code == 0 and ".onnx" in best.output, best.output  # its branches export to If nodes
    evaluation = min(stored, key=lambda e: e.macs)
    mode_id = evaluation.mode_id
    store = Store(url)
    try:  # the mode as exported: with the BN statistics it was evaluated with
        executor, _ = materialized_model(store, evaluation)
        preprocessing = store.get_supernet(evaluation.supernet_hash).preprocessing
    finally:
        store.dispose()
    budget = 1.0 if executor.budget_macs is None else executor.budget_macs / supernet.plain_macs
    mean, std = preprocessing["mean"][0], preprocessing["std"][0]
    pixels = torch.rand(6, *supernet.input_shape) * 255
    expected = [executor((x / 255 - mean) / std) for x in pixels.split(1)]
    for runtime in export_formats().values():
        if runtime.missing():
            continue  # refused for its missing extra instead (tested with the runtimes)
        path = tmp_path / f"m{runtime.suffixes[0]}"
        result = runner.invoke(app, ["export", mode_id, "--device", "quick", "-o", str(path), "--storage", url])
        if runtime.name in ("onnxruntime", "openvino"):  # control flow kept: the file skips per input
            assert result.exit_code == 0, result.output
            _check_control_flow(runtime.name, path, expected, pixels, budget)
        else:  # TorchScript cannot keep torch.cond; ExecuTorch's lowering answers wrongly: both refused
            assert result.exit_code == 2 and "data-dependent control flow" in result.output, result.output
            assert not path.exists()
    exported = runner.invoke(app, ["export", mode_id, "--device", "quick", "-o", str(tmp_path / "m.json"),
                                   "--storage", url])
    assert exported.exit_code == 0 and json.loads((tmp_path / "m.json").read_text()), exported.output


def _check_control_flow(runtime: str, path, expected: list[torch.Tensor], pixels: torch.Tensor,
                        budget: float) -> None:
    """Each sample through the exported file (its budget fed) answers as the mode's executor, which
    skips per sample in eager PyTorch."""
    if runtime == "onnxruntime":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        assert names == ["input", "budget"]

        def run(x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(session.run(None, {"input": x.numpy(), "budget": [budget]})[0])
    else:
        import openvino

        request = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}) \
            .create_infer_request()

        def run(x: torch.Tensor) -> torch.Tensor:
            request.infer({0: x.numpy(), 1: torch.tensor([budget]).numpy()})
            return torch.from_numpy(request.get_output_tensor(0).data.copy())
    for x, logits in zip(pixels.split(1), expected, strict=True):
        torch.testing.assert_close(run(x), logits, rtol=1e-4, atol=1e-4)
