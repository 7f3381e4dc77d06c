#!/usr/bin/env bash
# The whole pipeline on the embedded public-domain corpus, from a fresh clone:
# environment -> token shards -> train softmax, lssa, lssar -> length sweep 1x-16x -> plot.
#   bash scripts/demo.sh
# Under 9 minutes on 2 CPU cores (config/demo_cpu.py: the corpus as UTF-8 bytes), a few on a
# GPU (config/small_gpu.py: GPT-2 tokens).
# Re-running reuses the environment, the shards and finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
mkdir -p results
exec > >(tee results/demo.log) 2>&1   # the whole run, its wall time included, kept beside the results
source scripts/env.sh
log_start demo bash scripts/demo.sh

if python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    config=config/small_gpu.py; tokenizer=gpt2; tokens=()             # the default budget, capped to the validation split
else
    config=config/demo_cpu.py; tokenizer=bytes; tokens=(--tokens 16384) # CPU: a smaller, equal budget per length
fi
python data/prepare.py embedded --tokenizer $tokenizer
echo "[demo] training with $config"
runs=()
for attention in softmax lssa lssar; do
    out=out/demo-$attention
    python train.py "$config" --attention=$attention --out_dir=$out --init_from=auto
    runs+=("$out")
done

python eval_length.py "${runs[@]}" "${tokens[@]}" --out results/demo.json
python scripts/plot_length.py results/demo.json -o results/demo.png --title "demo: $config"
python scripts/table_length.py results/demo.json
echo "[demo] plot: results/demo.png   numbers: results/demo.json   wall time: $(( $(date +%s) - start )) s"
