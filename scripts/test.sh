#!/usr/bin/env bash
# Quick start, command 2: set everything up (incl. headless Chromium), then type-check and run the
# fast tier of the test suite. Arguments go to pytest: `--full` runs the full tier (what CI runs:
# also the tests marked slow, ray, browser and zoo), `-m ray` one marker, `tests/search` one folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh chromium runtimes  # Debian chromium + chromedriver for the browser tests; the optional
# runtimes (OpenVINO, ExecuTorch), whose tests are skipped where they are not installed
# Storage tests run against a real PostgreSQL on 127.0.0.1:5432; start the local cluster if it is down.
if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "test: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
    for _ in $(seq 20); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.5; done
  fi
fi
# The type check (pyproject's [tool.mypy]) and the tests both run; either failing fails the command.
status=0
echo "test: mypy"
.venv/bin/python -m mypy || status=$?
.venv/bin/python -m pytest "$@" || status=$?
exit "$status"
