#!/usr/bin/env bash
# Sets up .venv with kedro-edge from this checkout; `--dev` adds the test tools.
# Idempotent: run it again after pulling. Uses python3 (3.10+) from PATH or $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "${1:-}" = "--dev" ]; then
  extras="[dev]"
  # The loopback SSH test fleet (kedro_edge.testing) runs Debian's sshd on 127.0.0.x.
  if [ ! -x /usr/sbin/sshd ]; then
    if [ "$(id -u)" -eq 0 ]; then
      # Two commands, not `a && b`: under `set -e` a failing `a &&` would not stop the script.
      apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server
    else
      echo "setup.sh --dev: /usr/sbin/sshd is missing; install it as root: apt-get install openssh-server" >&2
      exit 1
    fi
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch is pinned <2.14 in pyproject.toml: that resolves to the CPU build, not a multi-GB CUDA one.
.venv/bin/python -m pip install --quiet -e ".${extras}"
echo "kedro-edge set up in .venv ($(.venv/bin/python -c 'import torch, onnxruntime; print("torch", torch.__version__, "onnxruntime", onnxruntime.__version__)'))"
