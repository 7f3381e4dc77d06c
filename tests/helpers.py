"""Helpers shared by the tests (pytest puts tests/ on sys.path)."""

VOCAB = 97  # the synthetic dataset's vocabulary: small, so tiny models train in seconds


def tiny_args(synth_dir, out_dir, *extra):
    return ["config/demo_cpu.py", f"--data_dir={synth_dir}", f"--out_dir={out_dir}", "--model=tiny",
            f"--vocab_size={VOCAB}", "--block_size=32", "--batch_size=8", "--eval_iters=2", *extra]
