# Sourced by scripts/test.sh, scripts/demo.sh and the reproduction scripts: enter a Python environment that has
# torch and requirements.txt. Uses the active virtual environment (or conda environment) if
# there is one, else creates ./.venv. Set PYTHON to choose the interpreter, TORCH_SPEC to choose the torch build,
# EXTRA_REQUIREMENTS to install more requirement files (requirements-eval.txt: lm-eval, for
# downstream evaluations), NO_INSTALL=1 to use the python on PATH as it is (scripts/preflight.py
# then names what is missing and its install command).

PYTHON=${PYTHON:-python3}
if [ "${NO_INSTALL:-0}" = 1 ]; then
    # The python on PATH already has what the script needs (a GPU machine's image, for
    # scripts/gpu_check.sh): enter no environment, install nothing.
    :
else
    if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ]; then
        if [ ! -x .venv/bin/python ]; then
            echo "[env] creating .venv with $($PYTHON --version 2>&1)"
            "$PYTHON" -m venv .venv
        fi
        # shellcheck disable=SC1091
        source .venv/bin/activate
    fi
    if ! python -c "import torch" 2>/dev/null; then
        # A plain `pip install torch` on Linux pulls the multi-GB CUDA build. Without an NVIDIA
        # GPU the CPU build is all we need: from PyTorch's CPU index when it can be reached,
        # else the pinned release from the package index.
        if [ -n "${TORCH_SPEC:-}" ]; then
            torch_args=("$TORCH_SPEC")
        elif command -v nvidia-smi >/dev/null 2>&1; then
            torch_args=(torch)
        elif python -c "import socket; socket.getaddrinfo('download.pytorch.org', 443)" 2>/dev/null; then
            torch_args=(torch --index-url https://download.pytorch.org/whl/cpu)
        else
            torch_args=("torch==2.13.0")
        fi
        echo "[env] installing ${torch_args[*]}"
        python -m pip install -q "${torch_args[@]}"
    fi
    for requirements in requirements.txt ${EXTRA_REQUIREMENTS:-}; do
        echo "[env] installing $requirements"
        python -m pip install -q -r "$requirements"
    done
fi

# The first line of a script's log: when, what, and the code version that runinfo.py records
# with every result (commit; "dirty" for uncommitted code changes, results/ not counted).
log_start() {
    echo "[$1] $(date -u +%FT%TZ) ${*:2} at $(python -c 'from runinfo import code_version; v = code_version()
print(v["commit"][:7] + (" (dirty)" if v["dirty"] else ""))')"
}

# The reproduce scripts' toy pass: `toy_pass SCRATCH COMMAND...` runs COMMAND (the script again at a
# toy scale, writing only under SCRATCH), its lines marked [toy] so that the real run.log, which
# report.py reads, holds no wall time of it; a failure stops the caller before anything is trained.
toy_pass() {
    local scratch=$1 t0
    shift
    t0=$(date +%s)
    echo "[preflight] the toy pass in $scratch (SKIP_PREFLIGHT=1 skips it)"
    if ! "$@" 2>&1 | sed -u "s/^/[toy] /"; then
        echo "[preflight] the toy pass failed (its output is above; its files: $scratch): nothing was trained" >&2
        exit 1
    fi
    rm -rf "$scratch"
    echo "[preflight] the toy pass finished in $(( $(date +%s) - t0 )) s: every stage works here"
}
