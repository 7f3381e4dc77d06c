#!/usr/bin/env bash
# The GPU path in one command on a machine with one NVIDIA GPU: training speed (lssar, lssa,
# softmax), every kernel tile against the reference, bit-for-bit determinism, the other types'
# training speed, attention alone at T = 16384 and the kernels' error table, each under its own
# time limit, into GPU_CHECK_OUT (else OUT, else results/gpu/<gpu-name>/). See scripts/gpu_check.py.
#   python data/prepare.py embedded      # once, anywhere: the check reads data/embedded and .cache
#   bash scripts/gpu_check.sh            # every part, at most 9 minutes (GPU_CHECK_BUDGET=540 s)
#   bash scripts/gpu_check.sh tiles determinism tests repro
# Runs on the Python that already has CUDA torch (python, else python3; PYTHON=... to choose):
# no virtual environment, no pip, no network. It needs torch with CUDA, triton, numpy, tiktoken,
# tqdm; pytest for the tiles and tests parts (pytest-xdist to run them in parallel: without it
# they run serially and do not finish in their limits); matplotlib for the repro part.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ ! -f data/embedded/meta.json ] || ! compgen -G "data/embedded/*_val_*.bin" >/dev/null; then
    echo "gpu_check: data/embedded is missing: run 'python data/prepare.py embedded' first" \
         "(on a machine without network, make it elsewhere and copy data/embedded and .cache)" >&2
    exit 2
fi
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in python python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c "import torch" 2>/dev/null; then
            PY=$candidate
            break
        fi
    done
fi
if [ -z "$PY" ]; then
    echo "gpu_check: no python with torch on PATH; set PYTHON=/path/to/python" >&2
    exit 2
fi
# The scripts the parts run call `python`: make it this interpreter, whatever it is named here.
# (A wrapper, not a link: a virtual environment's python finds its packages from its own path.)
shim=$(mktemp -d)
printf '#!/bin/sh\nexec %q "$@"\n' "$(command -v "$PY")" > "$shim/python"
chmod +x "$shim/python"
export PATH="$shim:$PATH" NO_INSTALL=1 PYTHONUNBUFFERED=1 WANDB_MODE=offline HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
python scripts/gpu_check.py "$@"
status=$?
rm -rf "$shim"
exit $status
