"""Helpers shared by the tests (pytest puts tests/ on sys.path)."""
import importlib
import os
import sys

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


def script(name):
    """scripts/NAME.py imported as scripts.NAME, and entered under its bare name too, the name the
    scripts import each other by (docs_tables.py: `import report`): one module object under both, so
    a test that patches it patches what the other scripts call. The package name is the one mutation
    testing gives the file's functions (tools/mutation.sh): only calls to scripts.NAME count there."""
    module = importlib.import_module(f"scripts.{name}")
    sys.modules.setdefault(name, module)
    return module
