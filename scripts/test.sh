#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs pytest.
#   bash scripts/test.sh            # everything (about 3 minutes on 2 CPU cores)
#   bash scripts/test.sh -k resume  # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
python -m pip install -q -r requirements-dev.txt
export WANDB_MODE=offline HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
python -m pytest "$@"
