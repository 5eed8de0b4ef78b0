"""How many images per forward pass when an evaluation scores the validation split on a CPU?

The evaluator scores every mode on the 5,000 validation images in batches of 500 (the unit of
`--eval-batches`). On a 2-core CPU a pass of 500 images of the default supernet's full network
moves tens of MB of activations per layer, which do not stay in cache; smaller passes do. This
times, per mode of the default supernet (full, half and quarter width; BN recalibrated as every
evaluation does), one scoring of the split in passes of 500 (the evaluator before), 200, 100 (now,
`trainers._evaluate.CPU_CHUNK`) and 50 images, interleaved within each round, over `--rounds`
rounds: medians with their range, the ratio to 500 per round, and whether every pass size
classified every image alike (it must: eval mode, each image's answer is its own).

Run: .venv/bin/python benchmarks/evaluation_chunks.py [--rounds 5] (about 3 minutes at 3 rounds; nothing else
may run meanwhile).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import write_result

from subnetsearch.data import DataSpec, load_data
from subnetsearch.search import EvaluationSettings
from subnetsearch.search._evaluator import calibration_batches
from subnetsearch.supernets import DEFAULT_CHECKPOINT, calibrated_bn, load_checkpoint
from subnetsearch.trainers._evaluate import CPU_CHUNK, evaluate_split_correct

CHUNKS = (500, 200, 100, 50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint(DEFAULT_CHECKPOINT)
    supernet = checkpoint.build().eval()
    splits = load_data(DataSpec.from_dict(checkpoint.data))
    batches = calibration_batches(splits, EvaluationSettings())
    modes = {"full": supernet.full_mode(), "width 1/2": supernet.uniform_mode(0.5),
             "width 1/4": supernet.uniform_mode(0.25)}
    rows = []
    for name, mode in modes.items():
        with calibrated_bn(supernet, mode, batches):
            evaluate_split_correct(supernet, splits, splits.val, max_batches=1, chunk=100)  # warm-up
            seconds: dict[int, list[float]] = {chunk: [] for chunk in CHUNKS}
            answers = {}
            for _ in range(args.rounds):
                for chunk in CHUNKS:
                    started = time.perf_counter()
                    accuracy, _, correct = evaluate_split_correct(supernet, splits, splits.val, chunk=chunk)
                    seconds[chunk].append(time.perf_counter() - started)
                    answers[chunk] = (accuracy, correct)
        ratios = {chunk: [a / b for a, b in zip(seconds[chunk], seconds[500], strict=True)] for chunk in CHUNKS}
        row = {"mode": name, "macs": supernet.cost(mode).macs, "accuracy": answers[500][0],
               "same_answers": all(torch.equal(answers[chunk][1], answers[500][1]) for chunk in CHUNKS),
               "seconds": {str(chunk): {"median": round(statistics.median(s), 3), "min": round(min(s), 3),
                                        "max": round(max(s), 3)} for chunk, s in seconds.items()},
               "time_vs_500": {str(chunk): {"median": round(statistics.median(r), 3), "min": round(min(r), 3),
                                            "max": round(max(r), 3)} for chunk, r in ratios.items()}}
        rows.append(row)
        print(name, {chunk: row["seconds"][str(chunk)]["median"] for chunk in CHUNKS}, "same answers",
              row["same_answers"], flush=True)
    chosen = str(CPU_CHUNK)
    write_result("evaluation_chunks", {
        "setup": {"images": len(splits.val), "rounds": args.rounds, "threads": args.threads,
                  "how": "one scoring of the split per pass size per round, interleaved; calibrated BN"},
        "chunk_now": CPU_CHUNK, "modes": rows,
        "checks": {"same_answers": all(row["same_answers"] for row in rows),
                   "chosen_faster_on_every_mode": all(row["time_vs_500"][chosen]["max"] < 1 for row in rows)}})


if __name__ == "__main__":
    main()
