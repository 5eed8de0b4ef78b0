"""The Ray tutorial's cluster steps (docs/tutorial/ray.md), run as written from a clean home directory (no Ray token yet):
a head and an `edge` worker node with token authentication, a device on that node, a search on it,
its front and a best-mode query, then `ray stop`. Here, before the session-wide test cluster of
tests/distributed starts, because `ray stop` stops every Ray process of this user."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def readme_cluster_steps() -> list[str]:
    text = (ROOT / "docs" / "tutorial" / "ray.md").read_text()
    start = text.index("A two-node cluster on one machine")
    block = text[text.index("```\n", start) + 4:]
    block = block[:block.index("```")]
    steps, pending = [], ""
    for line in block.splitlines():
        line = pending + line
        pending = ""
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        if line.strip():
            steps.append(line.strip())
    return steps


def test_the_readmes_cluster_steps_work_from_a_clean_home(tmp_path, postgres_url) -> None:
    steps = readme_cluster_steps()
    assert any(step.startswith("ray start --head") for step in steps) and steps[-1] == "ray stop"
    script = ["set -euo pipefail"]
    for step in steps:
        if step.startswith("source .venv/bin/activate"):
            step = f"source {ROOT / '.venv/bin/activate'}"
        elif step.startswith("psql "):  # the test session's own database instead of a new one
            continue
        elif step.startswith("export SUBNETSEARCH_STORAGE="):
            step = f"export SUBNETSEARCH_STORAGE={postgres_url}"
        elif step.startswith("subnetsearch dashboard"):  # a server: it runs until stopped
            continue
        step = re.sub(r"--trials \d+", "--trials 2", step)  # a short search; everything else as written
        script.append(step)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_AUTH_MODE", None)
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert (home / ".ray" / "auth_token").exists()
    token = (home / ".ray" / "auth_token").read_text().strip()
    assert token and token not in done.stdout and token not in done.stderr  # never printed
    assert "Pareto front" in done.stdout and "best mode" in done.stdout.lower()


def test_a_driver_without_token_mode_is_told_the_cluster_needs_a_token(tmp_path) -> None:
    """A head started with token authentication (a clean home: its token is generated), and a
    driver without RAY_AUTH_MODE=token: refused within seconds, saying what to set (Ray's own
    driver retries for about 25 s and then says only that it cannot connect)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    try:
        subprocess.run(["ray", "get-auth-token", "--generate"], env=env, capture_output=True, check=True, timeout=60)
        subprocess.run(["ray", "start", "--head", "--port=6397", "--num-cpus=1", "--object-store-memory=100000000",
                        "--include-dashboard=false"], env=env, capture_output=True, check=True, timeout=120)
        driver = {key: value for key, value in env.items() if key != "RAY_AUTH_MODE"}
        code = ("import time; from subnetsearch.distributed import ClusterError, connect\nstart = time.monotonic()\n"
                "try:\n    connect('127.0.0.1:6397')\nexcept ClusterError as error:\n"
                "    print(round(time.monotonic() - start, 1), error)\n")
        done = subprocess.run([sys.executable, "-c", code], env=driver, capture_output=True, text=True, timeout=120)
        with_token = subprocess.run([sys.executable, "-c", "from subnetsearch.distributed import connect; "
                                     "print(connect('127.0.0.1:6397'))"], env=env, capture_output=True, text=True,
                                    timeout=120)
    finally:
        subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True, timeout=120)
    seconds, _, message = done.stdout.strip().partition(" ")
    assert "requires token authentication" in message and "RAY_AUTH_MODE=token" in message, done.stdout + done.stderr
    assert float(seconds) < 10
    assert with_token.returncode == 0 and "the Ray cluster at 127.0.0.1:6397" in with_token.stdout, with_token.stderr
