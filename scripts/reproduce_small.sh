#!/usr/bin/env bash
# The paper's effect at small scale on one GPU (about 15 minutes on an H100): a 4-layer,
# width-256 model on the embedded corpus at context 256, trained with softmax, lssa, lssar
# (p=15) and lssar (p=3); the 1x-16x sweep, the lssa model re-weighted at inference, plots.
# Also passkey retrieval (eval_passkey.py) at 1x-8x the training context.
#   bash scripts/reproduce_small.sh            # one GPU: config/small_gpu.py -> results/small/
#   bash scripts/reproduce_small.sh cpu        # CPU scale: config/demo_cpu.py -> results/small-cpu/
#   DRY_RUN=1 bash scripts/reproduce_small.sh  # print the commands only
# Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-gpu}" in
    gpu) config=config/small_gpu.py; name=small; trials=20 ;;
    cpu) config=config/demo_cpu.py; name=small-cpu; trials=10; EVAL_ARGS=${EVAL_ARGS:---tokens 16384} ;;
    *) echo "usage: bash scripts/reproduce_small.sh [gpu|cpu]" >&2; exit 2 ;;
esac
results=results/$name
run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }
start=$(date +%s)

run python data/prepare.py embedded
for attention in softmax lssa lssar; do
    run python train.py "$config" --attention=$attention --out_dir=out/$name-$attention --init_from=auto
done
run python train.py "$config" --attention=lssar --reweight_p=3.0 --out_dir=out/$name-lssar-p3 --init_from=auto
run python eval_length.py out/$name-softmax out/$name-lssa out/$name-lssar out/$name-lssar-p3 ${EVAL_ARGS:-} \
    --out $results/sweep.json
run python eval_length.py out/$name-lssa --attention lssar --p 15 ${EVAL_ARGS:-} --out $results/lssa_reweighted.json
run python scripts/plot_length.py $results/sweep.json $results/lssa_reweighted.json -o $results/sweep.png \
    --title "$name: 4 attention runs + lssa re-weighted at inference"
run python scripts/table_length.py $results/sweep.json $results/lssa_reweighted.json --out $results/table.md
run python eval_passkey.py out/$name-softmax out/$name-lssa out/$name-lssar out/$name-lssar-p3 --trials $trials \
    --out $results/passkey.json
run python scripts/plot_passkey.py $results/passkey.json -o $results/passkey.png
echo "[reproduce_small] wall time $(( $(date +%s) - start )) s; results in $results/"
