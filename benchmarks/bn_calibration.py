"""BN statistics study: why stored S-BN statistics fail mixed modes, and what fixes them.

For each supernet checkpoint given (e.g. the shipped one, trained with sampling="uniform-stats", and
one trained with the paper's independent sampling), validation accuracy of the uniform modes and of
random mixed modes with (a) the stored S-BN statistics and (b) statistics recalibrated on 20
training batches for that mode.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from _common import write_result

from subnetsearch.data import DataSpec, load_data
from subnetsearch.search import EvaluationSettings, calibration_batches, mode_accuracy
from subnetsearch.supernets._checkpoint import load_checkpoint
from subnetsearch.supernets._pretrained import DEFAULT_CHECKPOINT


def study(path: Path, random_modes: int) -> dict:
    state = load_checkpoint(path)
    supernet = state.build()
    splits = load_data(DataSpec(**state.data))
    stored_settings = EvaluationSettings(calibration_batches=0)
    calibrated_settings = EvaluationSettings()
    batches = calibration_batches(splits, calibrated_settings)
    generator = torch.Generator().manual_seed(123)
    modes = [(f"uniform 1/{g}", supernet.uniform_mode(g)) for g in (1, 2, 4, 8, 16)]
    modes += [(f"random {i}", supernet.random_mode(generator)) for i in range(random_modes)]
    rows = []
    for name, mode in modes:
        stored = mode_accuracy(supernet, mode, splits, stored_settings)
        calibrated = mode_accuracy(supernet, mode, splits, calibrated_settings, batches)
        rows.append({"mode": name, "mode_id": mode.id, "macs": supernet.cost(mode).macs,
                     "val_acc_stored_bn": round(stored, 4), "val_acc_calibrated": round(calibrated, 4)})
        print(path.parent.name, rows[-1])
    mixed = [r for r in rows if r["mode"].startswith("random")]
    return {"checkpoint": str(path), "recipe": state.recipe, "epochs": state.recipe.get("epochs"), "modes": rows,
            "mixed_median_stored": statistics.median(r["val_acc_stored_bn"] for r in mixed),
            "mixed_median_calibrated": statistics.median(r["val_acc_calibrated"] for r in mixed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="*", type=Path, default=[DEFAULT_CHECKPOINT])
    parser.add_argument("--random-modes", type=int, default=8)
    parser.add_argument("--name", default="bn_calibration")
    args = parser.parse_args()
    torch.set_num_threads(2)
    write_result(args.name, {"calibration": "20 training batches of 128, cumulative average, per mode",
                             "runs": [study(path, args.random_modes) for path in args.checkpoints]})


if __name__ == "__main__":
    main()
