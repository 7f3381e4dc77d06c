"""Helpers shared by the tests (pytest puts tests/ on sys.path)."""
import importlib
import os

import pytest

VOCAB = 97  # the synthetic dataset's vocabulary: small, so tiny models train in seconds


def tiny_args(synth_dir, out_dir, *extra):
    return ["config/demo_cpu.py", f"--data_dir={synth_dir}", f"--out_dir={out_dir}", "--model=tiny",
            f"--vocab_size={VOCAB}", "--block_size=32", "--batch_size=8", "--eval_iters=2", *extra]


def optional_module(name, install):
    """Import an optional dependency (lm-eval, transformers, triton): the tests that need it skip without it,
    except in CI, which installs it (scripts/test.sh), so that there its absence is a failure."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=f"{name} is optional: {install}")
