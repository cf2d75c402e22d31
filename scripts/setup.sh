#!/usr/bin/env bash
# Create or refresh .venv with hwprune (+ test tools) and the pinned torch/torchvision pair,
# and install the Fashion-MNIST Debian package when it is missing and we are root.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.hwprune-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "setup: installing hwprune and its dependencies into .venv (first time: a few minutes)"
    if ! .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]" >.venv/pip.log 2>&1; then
        # pip's warnings about absent local mirrors in the machine's pip config are noise: drop them.
        grep -v "is ignored: it is neither" .venv/pip.log >&2
        echo "setup: pip install failed (full log: .venv/pip.log)" >&2
        exit 1
    fi
    .venv/bin/python -c "import torch, torchvision, torch_pruning, onnxruntime" \
        || { echo "setup: the installed torch/torchvision pair does not import" >&2; exit 1; }
    touch "$stamp"
fi

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing Fashion-MNIST (Debian package dataset-fashion-mnist)"
        (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
            || echo "setup: could not install dataset-fashion-mnist; pass --data-dir to hwprune" >&2
    else
        echo "setup: Fashion-MNIST not found; run 'sudo apt-get install dataset-fashion-mnist' or pass --data-dir" >&2
    fi
fi
