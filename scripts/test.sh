#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs pytest.
#   bash scripts/test.sh            # everything (about 4.5 minutes on 2 CPU cores, plus the installs)
#   bash scripts/test.sh -k resume  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# lm-eval too, so the lm-eval integration is tested (tests/test_downstream.py; it skips without lm-eval
# outside CI). On a fresh .venv this install takes about 30 s of CPU (1 min 42 s wall on a loaded machine).
python -m pip install -q -r requirements-dev.txt -r requirements-eval.txt
export WANDB_MODE=offline HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
python -m pytest "$@"
