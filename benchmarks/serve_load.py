"""Issue 33: the query service under load from a fleet's clients, on loopback.

Starts `subnetsearch serve` (a real uvicorn process) on a store that holds the default supernet's
front (the store of an earlier `benchmarks/deploy_front.py --keep DIR` run, or a fresh main job),
warms the artifact cache (the first request of an artifact exports it), then runs 1, 10 and 100
concurrent clients (threads, one persistent HTTP connection each) for a bounded number of requests
each and a bounded time: `best` queries with varied budgets, and requests of the cached front
artifact and of one mode's ONNX file. Reports per mix and concurrency: p50 / p99 latency,
throughput, and the count of errors (target: none); once per `--workers` count (server processes
sharing the port), one server after the other.

Run: .venv/bin/python benchmarks/serve_load.py [--store DIR] (about 3 minutes; nothing else may
run meanwhile).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from _common import write_result

ROOT = Path(__file__).resolve().parent.parent
SUBNETSEARCH = str(ROOT / ".venv/bin/subnetsearch")
CONCURRENCY = (1, 10, 100)
REQUESTS_PER_CLIENT = {1: 300, 10: 60, 100: 10}
TIME_LIMIT_S = 60


def start(storage: str, home: Path, workers: int) -> tuple[subprocess.Popen, str]:
    environment = {"XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}
    import os

    process = subprocess.Popen([SUBNETSEARCH, "serve", "--port", "0", "--storage", storage, "--workers", str(workers)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **environment})
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        found = re.search(r"at (http://[\d.]+:\d+)", line)
        if found:
            return process, found.group(1)
        if not line:
            break
    process.kill()
    raise SystemExit("the service did not start within 60 s")


def client(address: str, paths: list[str], count: int, deadline: float, latencies: list[float], errors: list[str]) -> None:
    parsed = urlparse(address)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    for index in range(count):
        if time.monotonic() > deadline:
            break
        path = paths[index % len(paths)]
        started = time.perf_counter()
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors.append(f"{path}: {response.status}")
        except (OSError, http.client.HTTPException) as error:
            errors.append(f"{path}: {type(error).__name__}: {error}")
            connection.close()
            connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
            continue
        latencies.append(time.perf_counter() - started)
    connection.close()


def load(address: str, paths: list[str], clients: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + TIME_LIMIT_S
    threads = [threading.Thread(target=client, args=(address, paths, REQUESTS_PER_CLIENT[clients], deadline,
                                                     latencies, errors)) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "seconds": round(seconds, 2), "throughput_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(statistics.median(ordered) * 1e3, 2) if ordered else None,
            "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3, 2) if ordered else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/deploy-front"),
                        help="a folder with store.db holding this-host's front (deploy_front.py --keep)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server processes, one run each")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="serve-load-"))
    if not (args.store / "store.db").exists():
        args.store = home
        subprocess.run([SUBNETSEARCH, "run", "--trials", "8", "--storage", f"sqlite:///{home / 'store.db'}",
                        "--report", str(home / "report.html")], check=True, cwd=home, stdout=subprocess.DEVNULL)
    storage = f"sqlite:///{args.store / 'store.db'}"
    by_workers = {}
    for workers in args.workers:
        front, warm, by_workers[str(workers)] = measure(storage, home, workers)
    for workers, results in by_workers.items():
        for mix, rows in results.items():
            for row in rows:
                print(f"{workers} workers", mix, json.dumps(row))
    errors = sum(row["errors"] for results in by_workers.values() for rows in results.values() for row in rows)
    write_result("serve_load", {"device": "this host (2 cores), loopback; server and clients on the same cores",
                                "front_modes": len(front), "warm_up": warm, "results_by_workers": by_workers,
                                "requests_per_client": REQUESTS_PER_CLIENT, "time_limit_s": TIME_LIMIT_S,
                                "checks": {"no_error": errors == 0}})


def measure(storage: str, home: Path, workers: int) -> tuple[list, dict, dict]:
    process, address = start(storage, home, workers)
    try:
        import urllib.request

        time.sleep(2)  # the workers fork once the address is printed
        with urllib.request.urlopen(f"{address}/devices/this-host/front", timeout=60) as response:
            front = json.loads(response.read())
        latencies = sorted(row["latency_ms"] for row in front)
        mode = front[0]["mode_id"]
        best = [f"/devices/this-host/best?max_latency_ms={value * factor:.4f}"
                for value in latencies for factor in (0.9, 1.0, 1.5)] + \
            ["/devices/this-host/best", "/devices/this-host/best?min_accuracy=0.9",
             "/devices/this-host/best?min_accuracy=0.88&objective=latency"]
        artifacts = ["/devices/this-host/front/artifact?format=onnx", f"/modes/{mode}/artifact?device=this-host"]
        warm = {}
        for path in artifacts:  # the first request exports; what is measured is the cached file
            started = time.perf_counter()
            with urllib.request.urlopen(address + path, timeout=600) as response:
                size = len(response.read())
            warm[path] = {"first_request_s": round(time.perf_counter() - started, 2), "bytes": size}
        results = {"best": [load(address, best, n) for n in CONCURRENCY],
                   "artifacts": [load(address, artifacts, n) for n in CONCURRENCY]}
    finally:
        process.terminate()
        process.wait(timeout=30)
    return front, warm, results


if __name__ == "__main__":
    main()
