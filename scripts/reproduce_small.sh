#!/usr/bin/env bash
# The paper's effect at small scale: softmax, lssa, lssar (p=15) and lssar (p=3) trained on the
# embedded corpus; the 1x-16x sweep, the lssa model re-weighted at inference (the paper's early,
# training-free claim; from v3 on lssar is trained from scratch), plots; on GPT-2
# tokens also passkey retrieval at 1x-8x. Then the paper's baselines and ablations (sigmoid,
# relu, ssmax, softmax_reweight, sigmoid_l1_reweight, relu_l1, softplus_l1) trained and swept the same way
# (BASELINES=0 skips them). Last, results/<name>/report.md (scripts/report.py) beside the paper's numbers.
#   bash scripts/reproduce_small.sh            # one GPU: config/small_gpu.py (GPT-2 tokens, context 256)
#                                              # -> results/small/
#   bash scripts/reproduce_small.sh cpu        # 2 CPU cores, under 30 min: config/demo_cpu.py (bytes, context
#                                              # 64) trained 900 steps, not the demo's 700 -> results/small-cpu/;
#                                              # no passkey test (its prompts are GPT-2 text)
#   DRY_RUN=1 bash scripts/reproduce_small.sh  # print the commands only
#   MAIN="softmax lssa lssar" PASSKEY=0 BASELINES=0 bash scripts/reproduce_small.sh   # the 3 main runs and sweep only
# Re-running skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=()
case "${1:-gpu}" in
    gpu) config=config/small_gpu.py; name=small; trials=20; eval_args=(); prepare=() ;;
    cpu) config=config/demo_cpu.py; name=small-cpu; trials=0; eval_args=(--tokens 16384); prepare=(--tokenizer bytes)
         steps=(--max_iters=900 --eval_interval=300 --ckpt_interval=900) ;;
    *) echo "usage: bash scripts/reproduce_small.sh [gpu|cpu]" >&2; exit 2 ;;
esac
results=results/$name
run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }
train() { run python train.py "$config" --attention="$1" --out_dir="out/$name-$2" --init_from=auto "${steps[@]}" "${@:3}"; }
start=$(date +%s)
if [ -z "${DRY_RUN:-}" ]; then  # every invocation, with its wall time, appended beside the results
    mkdir -p "$results"
    exec > >(tee -a "$results/run.log") 2>&1
    source scripts/env.sh  # the environment demo.sh uses (the active one, else ./.venv)
    log_start reproduce_small bash scripts/reproduce_small.sh "${1:-gpu}"
fi

run python data/prepare.py embedded "${prepare[@]}"
read -r -a main <<< "${MAIN:-softmax lssa lssar lssar-p3}"   # MAIN="softmax lssa lssar": fewer runs
for run_name in "${main[@]}"; do
    case $run_name in
        lssar-p3) train lssar lssar-p3 --reweight_p=3.0 ;;
        *) train "$run_name" "$run_name" ;;
    esac
done
runs=("${main[@]/#/out/$name-}")
run python eval_length.py "${runs[@]}" "${eval_args[@]}" --out $results/sweep.json
sweeps=($results/sweep.json)
if [[ " ${main[*]} " == *" lssa "* ]]; then   # the lssa model re-weighted at inference
    run python eval_length.py out/$name-lssa --attention lssar --p 15 "${eval_args[@]}" --out $results/lssa_reweighted.json
    sweeps+=($results/lssa_reweighted.json)
fi
run python scripts/plot_length.py "${sweeps[@]}" -o $results/sweep.png --title "$name: ${#main[@]} attention runs"
run python scripts/table_length.py "${sweeps[@]}" --out $results/table.md
if [ "$trials" -gt 0 ] && [ "${PASSKEY:-1}" = 1 ]; then
    run python eval_passkey.py "${runs[@]}" --trials $trials --out $results/passkey.json
    run python scripts/plot_passkey.py $results/passkey.json -o $results/passkey.png
fi

if [ "${BASELINES:-1}" = 1 ]; then
    baselines=(sigmoid relu ssmax softmax_reweight sigmoid_l1_reweight relu_l1 softplus_l1)
    for attention in "${baselines[@]}"; do
        train $attention $attention
    done
    runs=("${baselines[@]/#/out/$name-}")
    run python eval_length.py "${runs[@]}" "${eval_args[@]}" --out $results/baselines.json
    run python scripts/plot_length.py $results/sweep.json $results/baselines.json -o $results/baselines.png \
        --title "$name: baselines and ablations"
    run python scripts/table_length.py $results/baselines.json --out $results/baselines.md
    if [ "$trials" -gt 0 ] && [ "${PASSKEY:-1}" = 1 ]; then
        run python eval_passkey.py "${runs[@]}" --trials $trials --out $results/baselines_passkey.json
    fi
fi
echo "[reproduce_small] wall time $(( $(date +%s) - start )) s; results in $results/"
run python scripts/report.py $results   # results/<name>/report.md, as scripts/reproduce_paper.sh writes it
