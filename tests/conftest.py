"""Shared fixtures: a learnable synthetic token dataset and a tiny trained checkpoint."""
import signal

import numpy as np
import pytest

from helpers import VOCAB, tiny_args


def pytest_sessionstart(session):
    # A test's forked helpers (multiprocessing pool workers, run_forked) inherit this process's
    # signal handlers. Under tools/mutation.sh that is mutmut's fork-server SIGTERM handler, which
    # SIGKILLs every test process it started: Pool.terminate() in one mutant's tests then killed the
    # mutant tested beside it (recorded as a kill it was not). Tests start from the default.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def precision_unchanged():
    """Every test leaves torch's TF32 flags as it found them (put back either way; the test fails
    if it changed them): a test that left TF32 on would make later fp32 comparisons run against a
    TF32 reference (~1e-3), order-dependent failures that would look like kernel bugs."""
    from train import precision_flags, precision_kept
    with precision_kept() as before:
        yield
        after = precision_flags()
    assert after == before, f"the test left torch's TF32 flags changed: {before} -> {after}; restore them"


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A learnable token stream: a fixed Markov chain where each token has two likely successors."""
    from data.shards import write_shard
    d = tmp_path_factory.mktemp("synth")
    rng = np.random.default_rng(0)
    successors = rng.integers(0, VOCAB, size=(VOCAB, 2))
    for split, n, index in (("val", 20_000, 0), ("train", 200_000, 1)):
        tokens = np.empty(n, dtype=np.uint16)
        tokens[0] = 0
        choice = rng.integers(0, 2, size=n)
        for i in range(1, n):
            tokens[i] = successors[tokens[i - 1], choice[i]]
        write_shard(d / f"synth_{split}_{index:06d}.bin", tokens)
    return str(d)


@pytest.fixture(scope="session")
def trained_runs(synth_dir, tmp_path_factory):
    """Tiny models trained briefly at block_size 32, one per attention type: {attention: run_dir}."""
    import train
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for attention in ("softmax", "lssa", "lssar"):
        runs[attention] = str(root / attention)
        train.main(tiny_args(synth_dir, runs[attention], "--max_iters=30", "--eval_interval=100",
                             f"--attention={attention}", "--learning_rate=1e-2"))
    return runs


@pytest.fixture(scope="session")
def gpt2_vocab_run(synth_dir, tmp_path_factory):
    """A tiny lssar model with GPT-2's vocabulary (for the tools that encode and decode text)."""
    import train
    run = str(tmp_path_factory.mktemp("gpt2-vocab") / "lssar")
    train.main(tiny_args(synth_dir, run, "--max_iters=2", "--vocab_size=50304", "--attention=lssar"))
    return run
