"""Issue 33 benchmark (item 3): does DDI's skipping save time once deployed? A gated ResNet exported
with real control flow (torch.cond -> ONNX If; OpenVINO reads the same ONNX) is run at batch 1 on
inputs whose gates skip most blocks and on inputs whose gates skip none, against the plain backbone
exported as a static graph (no gates).

The network: DDIResNet-20 (layer gates, the LSTM of the paper; or MGL2S), random weights with BN
statistics set (latency does not depend on the weights' values); the layer gates' output layer is
scaled so that its decision depends on the input, and from 400 random inputs of varied brightness
the one that executes the fewest gated blocks and the one that executes the most are kept. With
`--checkpoint`, also a trained DDI network (`train --family ddi`) on the most and the least skipping
of its first 1,000 validation images (and how the rest spread). Each input's cost (a fraction of the
plain MACs) is the graph's own `cost` output, checked against `run_one`.

Timing: per runtime, the configurations are timed in turn within each round (interleaved), each as
the median of `--calls` calls after warm-up; the figures are medians over rounds with their
quartiles, and ratios are taken per round. 2 threads, one process, nothing else timed meanwhile.
Refusals (ExecuTorch's lowering of torch.cond) are recorded with their reason.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch
from _common import write_result

from subnetsearch.data import DataSpec, load_data
from subnetsearch.devices import get_runtime
from subnetsearch.devices.runtimes._onnxruntime import CONTROL_FLOW_OUTPUTS, export_onnx, export_onnx_control_flow
from subnetsearch.errors import ExportError
from subnetsearch.supernets import load_checkpoint
from subnetsearch.supernets._ddi_graph import GatedGraph
from subnetsearch.supernets._ddi_network import DDIResNet


def build(gating: str, widths: tuple[int, ...], seed: int = 0) -> DDIResNet:
    torch.manual_seed(seed)
    net = DDIResNet(20, widths, 1, 10, 28, gating, exits=False)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
        if net.layer_out is not None:  # decisions that depend on the input
            net.layer_out.bias.fill_(0.0)
            net.layer_out.weight.normal_(0, 30, generator=generator)
    return net.eval()


def executed(net: DDIResNet, x: torch.Tensor) -> tuple[float, float]:
    """(fraction of gated blocks executed, cost as a fraction of the plain MACs) by `run_one`."""
    decisions = net.forward_with_decisions(x)
    _, macs, _ = net.run_one(x)
    return float(1 - decisions.skip_ratio.mean()), macs / net.static_macs()


def pick_inputs(net: DDIResNet, candidates: int = 400) -> dict[str, torch.Tensor]:
    """Among random inputs of varied brightness, the one that executes the fewest gated blocks and the
    one that executes the most, with the layer gates' bias chosen (from a grid) to spread them most."""
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(candidates, 1, 28, 28, generator=generator) + (
        torch.arange(candidates) % 21 - 10).view(-1, 1, 1, 1) / 3
    best: tuple[float, float, torch.Tensor] | None = None
    with torch.no_grad():
        for bias in [b / 2 for b in range(-40, 41)] if net.layer_out is not None else [None]:
            if bias is not None and net.layer_out is not None:
                net.layer_out.bias.fill_(bias)
            decisions = net.forward_with_decisions(inputs)
            share = 1 - decisions.skip_ratio  # per input: the share of gated blocks' work executed
            spread = float(share.max() - share.min())
            if best is None or spread > best[0]:
                best = (spread, 0.0 if bias is None else bias, share)
        assert best is not None
        if net.layer_out is not None:
            net.layer_out.bias.fill_(best[1])
    share = best[2]
    return {"skipping": inputs[int(share.argmin())][None], "not_skipping": inputs[int(share.argmax())][None]}


def runner(runtime: str, onnx_bytes: bytes, threads: int):
    if runtime == "onnxruntime":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]

        def run(feeds: list) -> list:
            return session.run(None, dict(zip(names, feeds, strict=True)))
        return run
    import openvino

    compiled = openvino.Core().compile_model(openvino.Core().read_model(onnx_bytes), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    used = len(compiled.inputs)  # OpenVINO drops an input the graph does not read (no exits: no budget)

    def run_ov(feeds: list) -> list:
        request.infer(dict(enumerate(feeds[:used])))
        return [request.get_output_tensor(i).data.copy() for i in range(len(compiled.outputs))]
    return run_ov


def time_call(run, feeds: list, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def quartiles(values: list[float]) -> list[float]:
    q = statistics.quantiles(values, n=4)
    return [round(q[0], 4), round(q[2], 4)]


def trained(checkpoint: Path, images: int = 1000) -> tuple[DDIResNet, dict[str, torch.Tensor], dict]:
    """A trained DDI checkpoint's network and, among its first `images` validation images, the one
    that executes the fewest gated blocks and the one that executes the most (with how the rest
    spread)."""
    state = load_checkpoint(checkpoint)
    net = state.build().network.eval()
    splits = load_data(DataSpec.from_dict(state.data))
    with torch.no_grad():
        pixels = splits.normalize(splits.val.images[:images])
        share = 1 - net.forward_with_decisions(pixels).skip_ratio
    spread = {"images": int(share.numel()), "executed_median": round(float(share.median()), 3),
              "executed_min": round(float(share.min()), 3), "executed_max": round(float(share.max()), 3)}
    return net, {"skipping": pixels[int(share.argmin())][None],
                 "not_skipping": pixels[int(share.argmax())][None]}, spread


def measure(net: DDIResNet, inputs: dict[str, torch.Tensor], label: str, runtimes: list[str], rounds: int,
            calls: int, threads: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gated = export_onnx_control_flow(GatedGraph(net), (torch.rand(1, 1, 28, 28), torch.ones(1)),
                                         {"budget": 1.0}, CONTROL_FLOW_OUTPUTS)
        plain = export_onnx(DDIResNetPlain(net), torch.rand(1, 1, 28, 28))
    result: dict = {"network": label,
                    "plain_mmacs": round(net.static_macs() / 1e6, 2), "inputs": {}, "runtimes": {}}
    with torch.no_grad():
        for name, x in inputs.items():
            fraction, cost = executed(net, x)
            result["inputs"][name] = {"gated_blocks_executed": round(fraction, 3), "cost_of_plain_macs": round(cost, 3)}
    for runtime in runtimes:
        if get_runtime(runtime).missing():
            result["runtimes"][runtime] = {"skipped": get_runtime(runtime).missing()}
            continue
        run_gated, run_plain = runner(runtime, gated, threads), runner(runtime, plain, threads)
        feeds = {name: [x.numpy(), torch.ones(1).numpy()] for name, x in inputs.items()}
        for name in inputs:  # the graph's own cost output is run_one's
            cost = float(run_gated(feeds[name])[1][0])
            assert abs(cost - result["inputs"][name]["cost_of_plain_macs"]) < 1e-3, (runtime, name, cost)
        plain_feed = [inputs["not_skipping"].numpy()]
        for _ in range(50):  # warm-up
            run_plain(plain_feed)
            for f in feeds.values():
                run_gated(f)
        ms: dict[str, list[float]] = {"plain": [], "skipping": [], "not_skipping": []}
        for _ in range(rounds):
            ms["plain"].append(time_call(run_plain, plain_feed, calls))
            for name, f in feeds.items():
                ms[name].append(time_call(run_gated, f, calls))
        per_round = {
            "skipping_over_not_skipping": [s / n for s, n in zip(ms["skipping"], ms["not_skipping"], strict=True)],
            "not_skipping_over_plain": [n / p for n, p in zip(ms["not_skipping"], ms["plain"], strict=True)],
            "skipping_over_plain": [s / p for s, p in zip(ms["skipping"], ms["plain"], strict=True)]}
        result["runtimes"][runtime] = {
            "ms": {k: {"median": round(statistics.median(v), 4), "quartiles": quartiles(v)} for k, v in ms.items()},
            "ratios": {k: {"median": round(statistics.median(v), 3), "quartiles": quartiles(v)}
                       for k, v in per_round.items()}}
        print(runtime, label, result["runtimes"][runtime]["ratios"], flush=True)
    try:
        get_runtime("executorch").save_control_flow(GatedGraph(net), (torch.rand(1, 1, 28, 28), torch.ones(1)),
                                                    {"budget": 1.0}, {})
    except ExportError as error:
        result["runtimes"]["executorch"] = {"refused": str(error)}
    return result


class DDIResNetPlain(torch.nn.Module):
    """The backbone with every block run and no gate computed: the static network a DDI mode saves
    time against."""

    def __init__(self, net: DDIResNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = torch.relu(net.stem_bn(net.stem(x)))
        for block in net.gated_blocks:
            x = torch.relu(block.residual(x) + block.shortcut(x))
        return net.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="also a trained DDI checkpoint (`train --family ddi`) on its own validation images")
    parser.add_argument("--smoke", action="store_true", help="3 rounds of 10 calls: a check that it runs")
    args = parser.parse_args()
    rounds, calls = (3, 10) if args.smoke else (args.rounds, args.calls)
    torch.set_num_threads(args.threads)
    runtimes = ["onnxruntime", "openvino"]
    networks = []
    for gating, widths in (("layer", (16, 32, 64)), ("layer", (32, 64, 128)), ("mgl2s", (32, 64, 128))):
        net = build(gating, widths)
        label = f"DDIResNet-20 {'-'.join(map(str, widths))}, {gating} gates, random weights, 28x28, batch 1"
        networks.append(measure(net, pick_inputs(net), label, runtimes, rounds, calls, args.threads))
    if args.checkpoint is not None:
        net, inputs, spread = trained(args.checkpoint)
        depth = len(net.gated_blocks) * 2 + 2
        label = (f"trained {args.checkpoint.parent.name}: DDIResNet-{depth} {net.gating} gates (skip target "
                 f"{load_checkpoint(args.checkpoint).recipe.get('skip_target')}), its validation images")
        networks.append({**measure(net, inputs, label, runtimes, rounds, calls, args.threads),
                         "validation_spread": spread})
    checks = {f"{n['network']} / {runtime}: skipping faster than not skipping":
              r["ratios"]["skipping_over_not_skipping"]["median"] < 1
              for n in networks for runtime, r in n["runtimes"].items() if "ratios" in r}
    write_result("ddi_control_flow" + ("_smoke" if args.smoke else ""), {
        "setup": {"rounds": rounds, "calls_per_round": calls, "threads": args.threads,
                  "how": "interleaved per round; each figure the median of a round's calls; medians over rounds "
                         "with quartiles; ratios per round"},
        "networks": networks, "checks": checks})


if __name__ == "__main__":
    main()
