"""The channel shuffle's cost per runtime: which form to realize it in.

For the shipped supernet's uniform grouped modes (1/2, 1/4, 1/8, 1/16; grouped kernels everywhere),
three static networks each, paired against the full network in one window per mode and runtime
(devices.measure_paired; median ratio with its 95 % interval):

- reshape: the shuffles as reshape-transpose-reshape (PyTorch's native channel_shuffle in the
  PyTorch runtimes), as realized before;
- gather: each shuffle as one channel gather with a constant index (Realization(shuffle="gather"));
- none: the same network with its shuffles removed (not the mode's function: the floor a shuffle
  form can reach).

Outputs of the gather form are checked equal to the reshape form's (1e-5). A runtime's form
(`Runtime.shuffle`) is the one with the lower median ratio over the four modes.

    python benchmarks/shuffle_forms.py [--runtimes onnxruntime,openvino,...] [--windows 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from subnetsearch.devices import LatencyProtocol, available_runtimes, get_runtime, measure_paired, median_interval  # noqa: E402
from subnetsearch.supernets import DEFAULT_CHECKPOINT, PLAIN, Realization, load_checkpoint  # noqa: E402
from subnetsearch.supernets._layers import ChannelShuffle  # noqa: E402


def _without_shuffles(supernet, mode) -> torch.nn.Module:
    previous = [(m, m.enabled) for m in supernet.modules() if isinstance(m, ChannelShuffle)]
    for module, _ in previous:
        module.enabled = False
    try:
        return supernet.realize(mode, PLAIN)
    finally:
        for module, enabled in previous:
            module.enabled = enabled


def run(runtime: str, windows: int) -> dict:
    supernet = load_checkpoint(DEFAULT_CHECKPOINT).build().eval()
    protocol = LatencyProtocol(runtime=runtime, batch_size=1, threads=2)
    shape = supernet.input_shape
    reference = supernet.realize(supernet.full_mode(), PLAIN)
    example = torch.randn(4, *shape)
    modes = {name: mode for name, mode in supernet.named_modes().items() if name != "full"}
    results = {}
    for name, mode in modes.items():
        forms = {"reshape": supernet.realize(mode, Realization((), "reshape")),
                 "gather": supernet.realize(mode, Realization((), "gather")),
                 "none": _without_shuffles(supernet, mode)}
        with torch.no_grad():
            difference = float((forms["reshape"](example) - forms["gather"](example)).abs().max())
        ratios: dict[str, list[float]] = {form: [] for form in forms}
        for _ in range(windows):
            for form, window in measure_paired(forms, reference, shape, protocol).items():
                ratios[form].extend(window.ratios)
        results[name] = {"gather_vs_reshape_max_abs_difference": difference,
                         **{form: dict(zip(("ratio", "low", "high", "confidence"), median_interval(values), strict=True))
                            for form, values in ratios.items()}}
        print(runtime, name, {form: round(results[name][form]["ratio"], 3) for form in forms}, flush=True)
    chosen = min(("reshape", "gather"), key=lambda form: statistics.median(r[form]["ratio"] for r in results.values()))
    return {"modes": results, "chosen": chosen, "declared": get_runtime(runtime).shuffle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default=",".join(available_runtimes()))
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for runtime in args.runtimes.split(","):
        if runtime not in available_runtimes():
            results[runtime] = {"skipped": f"runtime {runtime} is not installed here"}
            continue
        results[runtime] = run(runtime, args.windows)
    write_result("shuffle_forms", {"protocol": "batch 1, 2 threads, paired against the full network "
                                   "(devices.PAIRING), ratios pooled over --windows windows",
                                   "windows": args.windows, "runtimes": results})


if __name__ == "__main__":
    main()
