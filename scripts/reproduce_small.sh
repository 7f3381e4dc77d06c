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
#   PREFLIGHT=1 bash scripts/reproduce_small.sh  # the toy pass alone: every run a few steps, tiny evaluations
# Re-running skips finished runs. As scripts/reproduce_paper.sh: scripts/preflight.py checks everything
# first, then the toy pass runs in a scratch folder (SKIP_PREFLIGHT=1 skips it); one invocation per
# results folder. TRAIN_ARGS, SWEEP_ARGS: extra train.py / eval_length.py options; RESULTS, OUT_ROOT:
# where results and runs go.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=()
case "${1:-gpu}" in
    gpu) config=config/small_gpu.py; name=small; trials=20; eval_args=(); prepare=() ;;
    cpu) config=config/demo_cpu.py; name=small-cpu; trials=0; eval_args=(--tokens 16384); prepare=(--tokenizer bytes)
         steps=(--max_iters=900 --eval_interval=300 --ckpt_interval=900) ;;
    *) echo "usage: bash scripts/reproduce_small.sh [gpu|cpu]" >&2; exit 2 ;;
esac
results=${RESULTS:-results/$name}
out=${OUT_ROOT:-out}
read -r -a train_args <<< "${TRAIN_ARGS:-}"
read -r -a sweep_args <<< "${SWEEP_ARGS:-}"
eval_args+=("${sweep_args[@]}")
trials=${PASSKEY_TRIALS:-$trials}
run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }
train() { run python train.py "$config" --attention="$1" --out_dir="$out/$name-$2" --init_from=auto "${steps[@]}" \
    "${@:3}" "${train_args[@]}"; }
if [ -z "${DRY_RUN:-}" ]; then  # every invocation, with its wall time, appended beside the results
    mkdir -p "$results"
    exec 9<>"$results/.lock"    # one writer per results folder: held by this shell (and its children) until it exits
    python3 dirlock.py "$results" --fd 9 --pid $$ -- bash scripts/reproduce_small.sh "$@" || exit 1
    exec > >(tee -a "$results/run.log") 2>&1
    source scripts/env.sh  # the environment demo.sh uses (the active one, else ./.venv)
    log_start reproduce_small bash scripts/reproduce_small.sh "${1:-gpu}"
fi

read -r -a main <<< "${MAIN:-softmax lssa lssar lssar-p3}"   # MAIN="softmax lssa lssar": fewer runs
baselines=(sigmoid relu ssmax softmax_reweight sigmoid_l1_reweight relu_l1 softplus_l1)
[ "${BASELINES:-1}" = 1 ] || baselines=()
preflight=() evals="sweep"
for run_name in "${main[@]}" "${baselines[@]}"; do
    case $run_name in
        lssar-p3) preflight+=(--run "lssar-p3 lssar --reweight_p=3.0") ;;
        *) preflight+=(--run "$run_name $run_name") ;;
    esac
done
if [ "$trials" -gt 0 ] && [ "${PASSKEY:-1}" = 1 ]; then evals+=" passkey"; fi
tokenizer=gpt2; [ "${prepare[*]}" = "--tokenizer bytes" ] && tokenizer=bytes
if [ -n "${DRY_RUN:-}" ]; then   # (a dry run checks nothing: it may be in a shell without the environment)
    echo "# then scripts/preflight.py's checks, and the toy pass unless SKIP_PREFLIGHT=1"
else
    python scripts/preflight.py 1 "${preflight[@]}" --evals "$evals" --results "$results" --out_root "$out" \
        --prefix "$name-" --tokenizer "$tokenizer" -- "$config" "${steps[@]}" "${train_args[@]}" || exit 1
fi
if [ -z "${SKIP_PREFLIGHT:-}" ] && [ -z "${DRY_RUN:-}" ]; then   # the toy pass (see scripts/reproduce_paper.sh)
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/reproduce_small-preflight.XXXXXX")
    toy_pass "$scratch" env -u PREFLIGHT SKIP_PREFLIGHT=1 NO_INSTALL=1 RESULTS="$scratch/results" OUT_ROOT="$scratch/out" \
        TRAIN_ARGS="${TRAIN_ARGS:-} --model=tiny --max_iters=4 --warmup_iters=1 --eval_interval=2 --eval_iters=1 \
--ckpt_interval=4 --log_interval=1" SWEEP_ARGS="${SWEEP_ARGS:-} --multipliers 1 2 --tokens 1024" \
        PASSKEY_TRIALS=$(( trials > 0 ? 1 : 0 )) bash scripts/reproduce_small.sh "${1:-gpu}"
    if [ -n "${PREFLIGHT:-}" ]; then exit 0; fi
fi
start=$(date +%s)   # the run's wall time in the report: not the preflight's and the toy pass's

run python data/prepare.py embedded "${prepare[@]}"
for run_name in "${main[@]}"; do
    case $run_name in
        lssar-p3) train lssar lssar-p3 --reweight_p=3.0 ;;
        *) train "$run_name" "$run_name" ;;
    esac
done
runs=("${main[@]/#/$out/$name-}")
run python eval_length.py "${runs[@]}" "${eval_args[@]}" --out "$results/sweep.json"
sweeps=("$results/sweep.json")
if [[ " ${main[*]} " == *" lssa "* ]]; then   # the lssa model re-weighted at inference
    run python eval_length.py "$out/$name-lssa" --attention lssar --p 15 "${eval_args[@]}" --out "$results/lssa_reweighted.json"
    sweeps+=("$results/lssa_reweighted.json")
fi
run python scripts/plot_length.py "${sweeps[@]}" -o "$results/sweep.png" --title "$name: ${#main[@]} attention runs"
run python scripts/table_length.py "${sweeps[@]}" --out "$results/table.md"
if [ "$trials" -gt 0 ] && [ "${PASSKEY:-1}" = 1 ]; then
    run python eval_passkey.py "${runs[@]}" --trials "$trials" --out "$results/passkey.json"
    run python scripts/plot_passkey.py "$results/passkey.json" -o "$results/passkey.png"
fi

if [ "${#baselines[@]}" -gt 0 ]; then
    for attention in "${baselines[@]}"; do
        train "$attention" "$attention"
    done
    runs=("${baselines[@]/#/$out/$name-}")
    run python eval_length.py "${runs[@]}" "${eval_args[@]}" --out "$results/baselines.json"
    run python scripts/plot_length.py "$results/sweep.json" "$results/baselines.json" -o "$results/baselines.png" \
        --title "$name: baselines and ablations"
    run python scripts/table_length.py "$results/baselines.json" --out "$results/baselines.md"
    if [ "$trials" -gt 0 ] && [ "${PASSKEY:-1}" = 1 ]; then
        run python eval_passkey.py "${runs[@]}" --trials "$trials" --out "$results/baselines_passkey.json"
    fi
fi
echo "[reproduce_small] wall time $(( $(date +%s) - start )) s; results in $results/"
run python scripts/report.py "$results"   # results/<name>/report.md, as scripts/reproduce_paper.sh writes it
