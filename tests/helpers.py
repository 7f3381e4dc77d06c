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


def help_text(main, module, monkeypatch, capsys):
    """What `main(["--help"])` prints, on one line (whitespace runs made one space), after checking that
    it starts with the usage and holds the module's docstring as written (its example commands keep
    their lines). COLUMNS is set wide: argparse's wrapping also breaks lines at hyphens."""
    monkeypatch.setenv("COLUMNS", "2000")
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and module.__doc__ in out
    return " ".join(out.split())


def ran_in_a_fresh_process(request):
    """Run this test again in a child pytest process and check it passed there; True in the parent
    (its body is done), False in the child (run the body). For Triton's real compiler: other tests
    run kernels under the interpreter in this process, which patches triton.language globally while a
    kernel runs, and a compile after them once failed on patched operators."""
    import subprocess
    if os.environ.get("LSSA_TEST_CHILD") == request.node.nodeid:
        return False
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
                          cwd=repo, env={**os.environ, "LSSA_TEST_CHILD": request.node.nodeid},
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return True
