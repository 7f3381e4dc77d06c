#!/usr/bin/env bash
# The paper's whole experiment on one multi-GPU box: FineWeb-10B shards, GPT-2 124M + RoPE trained
# with every attention type of the paper (the six main curves, the ablations, the decomposition
# types attention.RECIPES has), 18,865 steps of 524,288 tokens each; then per run the 1x-16x
# length sweep, passkey retrieval at 1K-16K, zero-shot downstream tasks, attention statistics and
# maps; the lssa model re-weighted at inference (the early versions' claim); plots and one report,
# results/<config name>/report.md, with the paper's numbers beside ours.
#   bash scripts/reproduce_paper.sh 8                        # 8 GPUs
#   DRY_RUN=1 bash scripts/reproduce_paper.sh 8              # every command and the cost estimate, nothing run
#   TYPES="softmax lssar" bash scripts/reproduce_paper.sh 8  # a subset of the runs below
#   CONFIG=config/paper_124m_owt.py bash scripts/reproduce_paper.sh 8
#   PREFLIGHT=1 bash scripts/reproduce_paper.sh 8            # the toy pass alone (below), minutes
# Before any training: scripts/preflight.py checks what every stage will need (packages, data,
# disk, writable folders, GPUs, the config, each fused kernel on this GPU) and stops with every
# problem at once; then the toy pass: every planned type trained a few steps at a tiny size, every
# evaluation at a tiny budget and the report, in a scratch folder that is deleted after
# (SKIP_PREFLIGHT=1 skips the pass). One invocation per results folder (a second is refused).
# An interrupted run picks up where it stopped: training resumes from its newest checkpoint
# (--init_from=auto), and an evaluation whose output file exists is skipped (delete it to redo it).
# More knobs (evaluation sizes, tasks, toy-scale overrides): docs/reproducing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ngpu=${1:?usage: bash scripts/reproduce_paper.sh NUM_GPUS}
config=${CONFIG:-config/paper_124m.py}
name=${NAME:-$(basename "$config" .py)}
results=${RESULTS:-results/$name}
out=${OUT_ROOT:-out}
read -r -a train_args <<< "${TRAIN_ARGS:-}"        # extra train.py options for every run
read -r -a sweep_args <<< "${SWEEP_ARGS:-}"        # extra eval_length.py options (e.g. --tokens N)
read -r -a stats_args <<< "${STATS_ARGS:-}"        # extra scripts/attention_stats.py options
read -r -a maps_args <<< "${MAPS_ARGS:-}"          # extra scripts/plot_attention_maps.py options
read -r -a passkey_lengths <<< "${PASSKEY_LENGTHS:-1024 1536 4096 8192 16384}"
passkey_trials=${PASSKEY_TRIALS:-20}               # per length and depth cell (5 cells): 100 prompts a length
# The downstream tasks (lm-eval names), one list: the paper's four zero-shot tasks, its MMLU and
# SummScreen (generation from 5-10K-token inputs, ROUGE), then the rest of eval_downstream.py's
# defaults. Windows of 16x the training context (16K tokens for the paper's 1K) so SummScreen's
# inputs fit; the other tasks' prompts are short. Always passed first, so a --max_length in
# DOWNSTREAM_ARGS (argparse keeps the last) overrides it and nothing else drops it.
tasks=${TASKS:-arc_easy,hellaswag,piqa,sciq,mmlu,scrolls_summscreenfd,arc_challenge,winogrande,lambada_openai}
read -r -a downstream_args <<< "--max_length 16x ${DOWNSTREAM_ARGS:-}${TASKS_PATH:+ --include_path $TASKS_PATH}"
evals=" ${EVALS:-sweep passkey downstream stats maps} "

# The runs: run name, attention type, train.py options. One line per run; a type that
# attention.RECIPES does not have (yet) is skipped with a note, and every type of RECIPES not
# listed here (ssmax; the decomposition types as they are added) is appended with its defaults.
RUNS=(
    "softmax softmax"                          # the six main curves
    "sigmoid sigmoid"                          #   sigma(q.k/sqrt(d) - ln n), Ramapuram et al. 2024
    "relu relu"                                #   relu(q.k/sqrt(d)) / n, Wortsman et al. 2023
    "lssa lssa"
    "lssar-p3 lssar --reweight_p=3.0"
    "lssar lssar"                              #   p = 15
    "softmax_reweight softmax_reweight"        # the re-weighting ablations
    "sigmoid_l1_reweight sigmoid_l1_reweight"
)

run() { echo "+ $*"; if [ -z "${DRY_RUN:-}" ]; then "$@"; fi; }
# step OUTPUT COMMAND...: run COMMAND unless OUTPUT is there already (finished earlier)
step() { if [ -e "$1" ]; then echo "= $1 exists: skipped"; else run "${@:2}"; fi; }
if [ -z "${DRY_RUN:-}" ]; then   # every invocation, with its wall time, appended beside the results
    mkdir -p "$results"
    exec 9<>"$results/.lock"     # one writer per results folder: held by this shell (and its children) until it exits
    python3 dirlock.py "$results" --fd 9 --pid $$ -- bash scripts/reproduce_paper.sh "$@" || exit 1
    exec > >(tee -a "$results/run.log") 2>&1
    if [[ $evals == *" downstream "* ]]; then EXTRA_REQUIREMENTS=requirements-eval.txt; fi   # lm-eval
    source scripts/env.sh        # the active environment, else ./.venv; installs what the stages need
    log_start reproduce_paper bash scripts/reproduce_paper.sh "$@"
fi

# the config must load and the step must split over this many GPUs: checked before hours of data prep.
# A dry run skips env.sh, so it may be in a shell without torch (and without `python`, hence
# python3): the keys that need torch to check (attention and model names) wait for the real run.
read -r dataset data_dir tokenizer < <(python3 -c "
import importlib.util, sys
from configurator import ConfigError, grad_accum_steps, load_config
have_torch = importlib.util.find_spec('torch') is not None
try:
    cfg = load_config(sys.argv[2:], check_model=have_torch)
    grad_accum_steps(cfg, int(sys.argv[1]))
except (ConfigError, ValueError) as e:
    sys.exit(f'config error with {sys.argv[1]} GPUs: {e}')
if not have_torch:
    print('[dry run] no torch in this shell: attention and model names not checked', file=sys.stderr)
from data.catalog import read_meta
tokenizer = cfg.tokenizer or ('bytes' if cfg.dataset.endswith('-bytes') else 'gpt2')
if cfg.data_dir:   # the shards' own tokenizer (no meta.json: GPT-2's, as the loaders take it)
    tokenizer = cfg.tokenizer or read_meta(cfg.data_dir).get('tokenizer', 'gpt2')
print(cfg.dataset, cfg.data_dir or '-', tokenizer)" "$ngpu" "$config" "${train_args[@]}") \
    || exit 1

# which runs: the list above, filtered by attention.RECIPES, then by TYPES
recipes=" $(python3 scripts/paper_plan.py types | tr '\n' ' ') "
listed=" "
for line in "${RUNS[@]}"; do read -r _ attention _ <<< "$line"; listed+="$attention "; done
for attention in $recipes; do
    [[ $listed == *" $attention "* ]] || RUNS+=("$attention $attention")
done
selected=() names=" "
for line in "${RUNS[@]}"; do
    read -r run_name attention _ <<< "$line"
    names+="$run_name "
    if [[ $recipes != *" $attention "* ]]; then
        echo "# $run_name skipped: attention.RECIPES has no type $attention (yet)"
    elif [ -z "${TYPES:-}" ] || [[ " $TYPES " == *" $run_name "* ]]; then
        selected+=("$line")
    fi
done
for wanted in ${TYPES:-}; do
    [[ $names == *" $wanted "* ]] || { echo "error: TYPES names unknown run $wanted; runs:$names" >&2; exit 2; }
done

pairs=() preflight=()
for line in "${selected[@]}"; do
    read -r run_name attention _ <<< "$line"
    pairs+=("$run_name:$attention") preflight+=(--run "$line")
done
python3 scripts/paper_plan.py cost "$ngpu" "${pairs[@]}" ${GPU:+--gpu "$GPU"} -- "$config" "${train_args[@]}"
if [ -n "${DRY_RUN:-}" ]; then   # (a dry run checks nothing: it may be in a shell without the environment)
    echo "# then scripts/preflight.py's checks, and the toy pass unless SKIP_PREFLIGHT=1"
else
    python scripts/preflight.py "$ngpu" "${preflight[@]}" --evals "$evals" --results "$results" --out_root "$out" \
        --prefix "$name-" --tokenizer "$tokenizer" -- "$config" "${train_args[@]}" || exit 1
fi

# The toy pass: this script on the same GPUs, every planned type for a few steps of a tiny model,
# every evaluation at a tiny budget, the report; in a scratch folder, deleted after, so that a
# killed pass leaves nothing that the full run could take for finished work. On the config's own
# data_dir when it names one, else the embedded corpus (prepared in a minute; not hours of FineWeb).
if [ -z "${SKIP_PREFLIGHT:-}" ] && [ -z "${DRY_RUN:-}" ]; then
    scratch=$(mktemp -d "${TMPDIR:-/tmp}/reproduce_paper-preflight.XXXXXX")
    toy_data=()
    if [ "$data_dir" = - ]; then toy_data=(--dataset=embedded$([ "$tokenizer" = bytes ] && echo -bytes)); fi
    toy_pass "$scratch" env -u PREFLIGHT SKIP_PREFLIGHT=1 NO_INSTALL=1 TYPES="${TYPES:-}" RESULTS="$scratch/results" \
        OUT_ROOT="$scratch/out" NAME="$name" TRAIN_ARGS="${TRAIN_ARGS:-} ${toy_data[*]} --model=tiny --block_size=64 \
--batch_size=4 --total_batch_size=0 --max_iters=4 --warmup_iters=1 --eval_interval=2 --eval_iters=1 --ckpt_interval=4 \
--log_interval=1" \
        SWEEP_ARGS="${SWEEP_ARGS:-} --multipliers 1 2 --tokens 1024" PASSKEY_LENGTHS="128 192" PASSKEY_TRIALS=1 \
        STATS_ARGS="${STATS_ARGS:-} --multipliers 1 2 --windows 1 --rows 4" MAPS_ARGS="${MAPS_ARGS:-} --multipliers 1 2 --rows 8" \
        DOWNSTREAM_ARGS="${DOWNSTREAM_ARGS:-} --limit 4" bash scripts/reproduce_paper.sh "$ngpu"
    if [ -n "${PREFLIGHT:-}" ]; then exit 0; fi
fi
start=$(date +%s)   # the run's wall time in the report: not the preflight's and the toy pass's

if [ "$data_dir" = - ]; then
    prepare=(python data/prepare.py "$dataset")
    [ "$tokenizer" = bytes ] && prepare+=(--tokenizer bytes)
    run "${prepare[@]}"
fi
if [ "$ngpu" = 1 ]; then launch=(python); else launch=(torchrun --standalone --nproc_per_node="$ngpu"); fi
for line in "${selected[@]}"; do
    read -r run_name attention options <<< "$line"
    read -r -a options <<< "${options:-}"
    dir=$out/$name-$run_name
    run "${launch[@]}" train.py "$config" --attention="$attention" --out_dir="$dir" --init_from=auto \
        "${options[@]}" "${train_args[@]}"
    if [[ $evals == *" sweep "* ]]; then
        step "$results/sweep/$run_name.json" python eval_length.py "$dir" "${sweep_args[@]}" \
            --out "$results/sweep/$run_name.json"
    fi
    if [[ $evals == *" passkey "* ]] && [ "$tokenizer" = gpt2 ]; then   # the prompts are GPT-2 text
        step "$results/passkey/$run_name.json" python eval_passkey.py "$dir" --lengths "${passkey_lengths[@]}" \
            --trials "$passkey_trials" --out "$results/passkey/$run_name.json"
    fi
    if [[ $evals == *" downstream "* ]] && [ "$tokenizer" = gpt2 ]; then
        step "$results/downstream/$run_name.json" python eval_downstream.py "$dir" --tasks "$tasks" \
            "${downstream_args[@]}" --out "$results/downstream/$run_name.json"
    fi
    if [[ $evals == *" stats "* ]]; then
        step "$results/attention_stats/$run_name.json" python scripts/attention_stats.py "$dir" "${stats_args[@]}" \
            --out "$results/attention_stats/$run_name.json"
    fi
    if [[ $evals == *" maps "* ]]; then
        step "$results/maps/$run_name.png" python scripts/plot_attention_maps.py "$dir" "${maps_args[@]}" \
            -o "$results/maps/$run_name.png"
    fi
done

# The early versions' claim (v1/v2): the re-weighting applied at inference to a trained lssa
# model. From v3 on lssar is trained from scratch; this is kept as a check, not one of the curves.
if [[ $evals == *" sweep "* ]] && [[ " ${pairs[*]} " == *" lssa:lssa "* ]]; then
    step "$results/lssa_reweighted.json" python eval_length.py "$out/$name-lssa" --attention lssar --p 15 \
        "${sweep_args[@]}" --out "$results/lssa_reweighted.json"
fi
echo "[reproduce_paper] wall time $(( $(date +%s) - start )) s; results in $results/"
run python scripts/report.py "$results"   # report.md and its plots
