#!/usr/bin/env bash
# The paper's experiment on one multi-GPU box: FineWeb-10B shards, GPT-2 124M + RoPE trained
# with softmax, lssa and lssar (18,865 steps of 524,288 tokens each), the 1x-16x length sweep
# (plus the lssa model re-weighted at inference), and the plots.
#   bash scripts/reproduce_paper.sh 8                 # 8 GPUs
#   CONFIG=config/paper_124m_owt.py bash scripts/reproduce_paper.sh 8
#   DRY_RUN=1 bash scripts/reproduce_paper.sh 8       # print the commands only
# Every step is resumable: re-running skips finished work and resumes interrupted training.
set -euo pipefail
cd "$(dirname "$0")/.."
ngpu=${1:?usage: bash scripts/reproduce_paper.sh NUM_GPUS}
config=${CONFIG:-config/paper_124m.py}
name=$(basename "$config" .py)
results=results/$name
run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }
if [ -z "${DRY_RUN:-}" ]; then source scripts/env.sh; fi  # the active environment, else ./.venv

# the config must load and the step must split over this many GPUs: checked before hours of data prep.
# A dry run skips env.sh, so it may be in a shell without torch (and without `python`, hence
# python3): the keys that need torch to check (attention and model names) wait for the real run.
dataset=$(python3 -c "
import importlib.util, sys
from configurator import ConfigError, grad_accum_steps, load_config
have_torch = importlib.util.find_spec('torch') is not None
try:
    cfg = load_config(['$config'], check_model=have_torch)
    grad_accum_steps(cfg, int('$ngpu'))
except (ConfigError, ValueError) as e:
    sys.exit(f'config error with $ngpu GPUs: {e}')
if not have_torch:
    print('[dry run] no torch in this shell: attention and model names not checked', file=sys.stderr)
print(cfg.dataset)")
run python data/prepare.py "$dataset"
for attention in softmax lssa lssar; do
    run torchrun --standalone --nproc_per_node="$ngpu" train.py "$config" --attention=$attention \
        --out_dir=out/$name-$attention --init_from=auto
done
run python eval_length.py out/$name-softmax out/$name-lssa out/$name-lssar --out $results/sweep.json
run python eval_length.py out/$name-lssa --attention lssar --p 15 --out $results/lssa_reweighted.json
run python scripts/plot_length.py $results/sweep.json $results/lssa_reweighted.json -o $results/sweep.png \
    --title "$name ($dataset)"
run python scripts/table_length.py $results/sweep.json $results/lssa_reweighted.json
