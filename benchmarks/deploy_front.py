"""Issue 33: the default supernet's front in one artifact per runtime, against one static file per mode.

Runs the main job in a fresh store (`subnetsearch run`, fewer trials: its front is what a device
would carry), exports that front with `export --front` as .onnx (If nodes on a `mode` input), .pte
(one ExecuTorch method per mode) and .xml (OpenVINO reading the ONNX form), and as a folder of one
static file per mode of the same runtime (`export --front -o DIR --format F`: the files `export`
writes one mode at a time). Per runtime, it measures:

- file size of the one artifact against the sum of the static files;
- resident memory (a fresh process: RSS after loading and running every mode, minus RSS after
  importing the runtime) of the one artifact, of the folder of static files, and of the largest
  static file alone;
- warm switch time: `DynamicModel.switch` cycling over the modes (median of many), and the first
  inference after a switch against the next one (a switch that left anything cold shows here);
- each mode's outputs against its static file's (`export <id>`, run by the runtime) on the same
  pixels (target: within 1e-5);
- each mode's latency in the one artifact against its static file, both run through
  `subnetsearch.deploy.DynamicModel` (the same numpy-in, numpy-out wrapper), paired: blocks of the
  two alternate in one process, 2 threads, batch 1 (target: within 5 %; median ratio over the
  blocks with its quartiles).

Run: .venv/bin/python benchmarks/deploy_front.py (about 8 minutes; nothing else may run meanwhile).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_result

from subnetsearch.deploy import DynamicModel
from subnetsearch.devices import get_runtime
from subnetsearch.search import export_front, export_mode
from subnetsearch.storage import Store

ROOT = Path(__file__).resolve().parent.parent
FORMS = {"onnxruntime": ".onnx", "executorch": ".pte", "openvino": ".xml"}
TARGETS = {"switch_ms": 0.1, "max_abs_difference": 1e-5, "latency_ratio": 1.05}
THREADS = 2


def rss_mb(script: str) -> float:
    """Resident memory a script's `load()` adds, in a fresh process (MB)."""
    code = f"""
import gc, numpy as np
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
{script}
prepare()
gc.collect()
before = rss()
keep = load()
gc.collect()
print(rss() - before)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    return float(done.stdout.strip().splitlines()[-1])


def memory(runtime: str, front: Path, folder: Path, largest: Path, shape: list[int]) -> dict:
    imports = {"onnxruntime": "import onnxruntime", "openvino": "import openvino",
               "executorch": "import torch; from executorch.runtime import Runtime"}[runtime]
    every_mode = """
def prepare():
    {imports}
    from subnetsearch.deploy import DynamicModel
def load():
    from subnetsearch.deploy import DynamicModel
    model = DynamicModel.load({path!r})
    for mode in model.modes:
        model.switch(mode)
        model(np.zeros({shape!r}, np.float32))
    return model
"""
    static = f"""
def prepare():
    {imports}
    from subnetsearch.devices import get_runtime
def load():
    import torch
    from subnetsearch.devices import get_runtime
    run = get_runtime({runtime!r}).load({str(largest)!r}, threads=2)
    run(torch.zeros({shape!r}))
    return run
"""
    return {"front_mb": round(rss_mb(every_mode.format(imports=imports, path=str(front), shape=shape)), 1),
            "static_files_mb": round(rss_mb(every_mode.format(imports=imports, path=str(folder), shape=shape)), 1),
            "largest_static_mb": round(rss_mb(static), 1)}


def paired_latency(front: DynamicModel, static: DynamicModel, pixels: np.ndarray, blocks: int = 30,
                   runs: int = 40) -> dict:
    for _ in range(10):
        front(pixels)
        static(pixels)
    ratios, front_ms, static_ms = [], [], []
    for _ in range(blocks):
        times = {}
        for name, call in (("front", front), ("static", static)):
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                call(pixels)
                samples.append(time.perf_counter() - started)
            times[name] = statistics.median(samples) * 1e3
        front_ms.append(times["front"])
        static_ms.append(times["static"])
        ratios.append(times["front"] / times["static"])
    quartiles = statistics.quantiles(ratios, n=4)
    return {"ratio_median": round(statistics.median(ratios), 4), "ratio_q1": round(quartiles[0], 4),
            "ratio_q3": round(quartiles[2], 4), "front_ms": round(statistics.median(front_ms), 4),
            "static_ms": round(statistics.median(static_ms), 4)}


def switching(model: DynamicModel, pixels: np.ndarray, cycles: int = 2000) -> dict:
    modes = list(model.modes)
    started = time.perf_counter()
    for index in range(cycles):
        model.switch(modes[index % len(modes)])
    switch_ms = (time.perf_counter() - started) / cycles * 1e3
    first, second = [], []
    for index in range(60):
        model.switch(modes[index % len(modes)])
        for bucket in (first, second):
            started = time.perf_counter()
            model(pixels)
            bucket.append(time.perf_counter() - started)
    ratios = [a / b for a, b in zip(first, second, strict=True)]
    return {"switch_ms": round(switch_ms, 6), "first_after_switch_over_next": round(statistics.median(ratios), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="the main job's TPE trials")
    parser.add_argument("--keep", type=Path, default=None, help="work here instead of a temporary folder")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="deploy-front-"))
    work.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{work / 'store.db'}"
    started = time.perf_counter()
    subprocess.run([str(ROOT / ".venv/bin/subnetsearch"), "run", "--trials", str(args.trials), "--storage", storage,
                    "--report", str(work / "report.html")], check=True, cwd=work, stdout=subprocess.DEVNULL)
    main_job_s = time.perf_counter() - started
    store = Store(storage)
    results: dict = {}
    for runtime, suffix in FORMS.items():
        if get_runtime(runtime).missing():
            results[runtime] = {"skipped": get_runtime(runtime).missing()}
            continue
        front = export_front(store, "this-host", work / f"front{suffix}")
        folder = export_front(store, "this-host", work / f"{runtime}-files", get_runtime(runtime).format)
        statics = {}
        for entry in front.manifest.modes:
            evaluation = store.find_evaluations("this-host", entry.id)[0]
            statics[entry.id] = export_mode(store, evaluation, work / f"{runtime}-mode{entry.index}{suffix}")
        static_bytes = {mode: sum(p.stat().st_size for p in (path, path.with_suffix(".bin")) if p.exists())
                        for mode, path in statics.items()}
        front_bytes = sum(p.stat().st_size for p in front.files if not p.name.endswith(".json"))
        model = DynamicModel.load(front.path, threads=THREADS)
        files = DynamicModel.load(folder.path, threads=THREADS)
        assert files.modes == model.modes
        pixels = np.random.default_rng(0).uniform(0, 255, front.manifest.input_shape).astype(np.float32)
        modes = []
        for entry in front.manifest.modes:
            static = get_runtime(runtime).load(statics[entry.id], threads=THREADS)
            model.switch(entry.id)
            files.switch(entry.id)
            difference = float(np.abs(model(pixels) - np.asarray(static(torch.from_numpy(pixels)))).max())
            modes.append({"mode_id": entry.id, "kind": entry.kind, "accuracy": entry.metrics["accuracy"],
                          "stored_latency_ms": entry.metrics["latency_ms"], "static_bytes": static_bytes[entry.id],
                          "max_abs_difference": difference, **paired_latency(model, files, pixels)})
        largest = max(statics, key=lambda mode: static_bytes[mode])
        results[runtime] = {
            "form": front.manifest.form, "modes": modes, "front_bytes": front_bytes,
            "sum_static_bytes": sum(static_bytes.values()), "sharing": front.manifest.sharing,
            "size_ratio": round(front_bytes / sum(static_bytes.values()), 4),
            "memory": memory(runtime, front.path, folder.path, statics[largest], front.manifest.input_shape),
            **switching(model, pixels)}
        print(runtime, json.dumps({k: v for k, v in results[runtime].items() if k != "modes"}))
    store.dispose()
    checks = {}
    for runtime, result in results.items():
        if "modes" not in result:
            continue
        checks[runtime] = {
            "switch_below_0.1_ms": result["switch_ms"] < TARGETS["switch_ms"],
            "outputs_within_1e-5": all(m["max_abs_difference"] <= TARGETS["max_abs_difference"] for m in result["modes"]),
            "latency_within_5_percent": all(m["ratio_median"] <= TARGETS["latency_ratio"] for m in result["modes"]),
        }
    write_result("deploy_front", {"device": "this host, 2 threads, batch 1", "main_job_s": round(main_job_s, 1),
                                  "targets": TARGETS, "results": results, "checks": checks})


if __name__ == "__main__":
    main()
