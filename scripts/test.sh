#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs pytest.
#   bash scripts/test.sh            # everything, in parallel test files (pytest-xdist, one worker per CPU
#                                   # core up to 8); pytest's own last line says how long a run took
#   bash scripts/test.sh -k resume  # extra arguments go to pytest
#   TEST_WORKERS=0 bash scripts/test.sh    # one process (a failure's output in order; pdb works)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# lm-eval and transformers too, so the lm-eval integration and the Hugging Face export are tested
# (tests/test_downstream.py, tests/test_hf.py; they skip without them outside CI). On a fresh .venv the
# lm-eval install takes about 30 s of CPU (1 min 42 s wall on a loaded machine); requirements-hf.txt adds
# about 13 s of CPU (20 s wall on a quiet machine, 57 s on a loaded one).
python -m pip install -q -r requirements-dev.txt -r requirements-eval.txt -r requirements-hf.txt
export WANDB_MODE=offline HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
# --dist loadfile: a file's tests share one worker, so a file's module-scoped fixtures (the interpreter
# runs of tests/test_kernels.py and tests/test_tiles.py, a minute each) run once
workers=${TEST_WORKERS:-$(python -c "import os; print(min(8, os.cpu_count() or 1))")}
python -m pytest -n "$workers" --dist loadfile "$@"
