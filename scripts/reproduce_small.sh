#!/usr/bin/env bash
# The paper's effect at small scale on one GPU: a 4-layer, width-256 model on the embedded
# corpus at context 256, trained with softmax, lssa, lssar (p=15) and lssar (p=3); the 1x-16x
# sweep, the lssa model re-weighted at inference, passkey retrieval at 1x-8x, plots. Then the
# paper's baselines and ablations (sigmoid, relu, ssmax, softmax_reweight,
# sigmoid_l1_reweight) trained and swept the same way (BASELINES=0 skips them).
#   bash scripts/reproduce_small.sh            # one GPU: config/small_gpu.py -> results/small/
#   bash scripts/reproduce_small.sh cpu        # CPU scale: config/demo_cpu.py -> results/small-cpu/
#   bash scripts/reproduce_small.sh cpu-long   # the same model trained 7.5x longer (1.5M tokens, ~45 min
#                                              # on 2 cores; no baselines) -> results/small-cpu-long/
#   DRY_RUN=1 bash scripts/reproduce_small.sh  # print the commands only
#   MAIN="softmax lssa lssar" PASSKEY=0 BASELINES=0 bash scripts/reproduce_small.sh   # the 3 main runs and sweep only
# Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
longer=()
case "${1:-gpu}" in
    gpu) config=config/small_gpu.py; name=small; trials=20; eval_args=() ;;
    cpu) config=config/demo_cpu.py; name=small-cpu; trials=10; eval_args=(--tokens 16384) ;;
    cpu-long) config=config/demo_cpu.py; name=small-cpu-long; trials=10; eval_args=(--tokens 32768)
              longer=(--max_iters=1500 --eval_interval=250 --ckpt_interval=500); BASELINES=${BASELINES:-0} ;;
    *) echo "usage: bash scripts/reproduce_small.sh [gpu|cpu|cpu-long]" >&2; exit 2 ;;
esac
results=results/$name
run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }
train() { run python train.py "$config" --attention="$1" --out_dir="out/$name-$2" --init_from=auto "${longer[@]}" "${@:3}"; }
start=$(date +%s)
if [ -z "${DRY_RUN:-}" ]; then  # every invocation, with its wall time, appended beside the results
    mkdir -p "$results"
    exec > >(tee -a "$results/run.log") 2>&1
    source scripts/env.sh  # the environment demo.sh uses (the active one, else ./.venv)
    log_start reproduce_small bash scripts/reproduce_small.sh "${1:-gpu}"
fi

run python data/prepare.py embedded
read -r -a main <<< "${MAIN:-softmax lssa lssar lssar-p3}"   # MAIN="softmax lssa lssar": fewer runs
for run_name in "${main[@]}"; do
    case $run_name in
        lssar-p3) train lssar lssar-p3 --reweight_p=3.0 ;;
        *) train "$run_name" "$run_name" ;;
    esac
done
runs=("${main[@]/#/out/$name-}")
run python eval_length.py "${runs[@]}" "${eval_args[@]}" --out $results/sweep.json
run python eval_length.py out/$name-lssa --attention lssar --p 15 "${eval_args[@]}" --out $results/lssa_reweighted.json
run python scripts/plot_length.py $results/sweep.json $results/lssa_reweighted.json -o $results/sweep.png \
    --title "$name: ${#main[@]} attention runs + lssa re-weighted at inference"
run python scripts/table_length.py $results/sweep.json $results/lssa_reweighted.json --out $results/table.md
if [ "${PASSKEY:-1}" = 1 ]; then
    run python eval_passkey.py "${runs[@]}" --trials $trials --out $results/passkey.json
    run python scripts/plot_passkey.py $results/passkey.json -o $results/passkey.png
fi

if [ "${BASELINES:-1}" = 1 ]; then
    baselines=(sigmoid relu ssmax softmax_reweight sigmoid_l1_reweight)
    for attention in "${baselines[@]}"; do
        train $attention $attention
    done
    runs=("${baselines[@]/#/out/$name-}")
    run python eval_length.py "${runs[@]}" "${eval_args[@]}" --out $results/baselines.json
    run python scripts/plot_length.py $results/sweep.json $results/baselines.json -o $results/baselines.png \
        --title "$name: baselines and ablations"
    run python scripts/table_length.py $results/baselines.json --out $results/baselines.md
    run python eval_passkey.py "${runs[@]}" --trials $trials --out $results/baselines_passkey.json
fi
echo "[reproduce_small] wall time $(( $(date +%s) - start )) s; results in $results/"
