#!/usr/bin/env bash
# Idempotent set-up: the Fashion-MNIST data package, a virtual environment, the package and its
# dependencies (torch 2.14.1 / torchvision 0.29.1, pinned by scripts/constraints.txt, come from the
# machine's local package cache; pyproject.toml itself asks only for version ranges).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  if [ -z "${SUBNETSEARCH_APT_UPDATED:-}" ]; then as_root apt-get update -qq; export SUBNETSEARCH_APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "setup: installing the Fashion-MNIST data package (dataset-fashion-mnist)"
  apt_install dataset-fashion-mnist
fi
extras=dev
for tool in "$@"; do
  case "$tool" in
    chromium) command -v chromium >/dev/null || { echo "setup: installing chromium"; apt_install chromium chromium-driver; } ;;
    runtimes) extras="dev,openvino,executorch,serve" ;;  # the optional runtimes and the query service (the tests cover them all)
    *) echo "setup: unknown argument $tool (known: chromium, runtimes)" >&2; exit 2 ;;
  esac
done

# pip's own output (setuptools' editable-install notice, the host's index warnings) only when it fails
quiet_pip() {
  local log
  log="$(mktemp)"
  if ! .venv/bin/pip "$@" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; echo "setup: pip $1 failed (its output is above)" >&2; exit 1
  fi
  grep -E "^ERROR" "$log" >&2 || true  # e.g. a dependency conflict pip reports but installs through
  rm -f "$log"
}

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
  quiet_pip install -q --upgrade pip
fi
stamp=.venv/.subnetsearch-installed
hash="$(cat pyproject.toml scripts/constraints.txt | sha256sum | cut -c1-16)"
have_hash="" have_extras=""
[ -f "$stamp" ] && read -r have_hash have_extras < "$stamp"
# Reinstall when pyproject.toml or the constraints changed, or when the runtimes are asked for and
# were not installed with it.
if [ "$have_hash" != "$hash" ] || { [ "$extras" != dev ] && [ "$have_extras" != "$extras" ]; }; then
  echo "setup: installing subnetsearch[$extras] and its dependencies into .venv (first time: a few minutes)"
  quiet_pip install -q -c scripts/constraints.txt -e ".[$extras]"
  echo "$hash $extras" > "$stamp"
fi
