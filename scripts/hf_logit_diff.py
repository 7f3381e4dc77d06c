"""
How far an exported transformers model's logits are from GPT.forward's, at 1x and 16x the training context.

    python scripts/hf_logit_diff.py out/demo-lssar                   # export to a temporary folder, compare
    python scripts/hf_logit_diff.py out/small-softmax --portable     # the stock gpt_neox export
    python scripts/hf_logit_diff.py --random softmax --context 1024 --portable   # a random model, no training

Prints max |difference| over all positions and the vocabulary, fp32 on the CPU, for random
token ids (one row per length). The random models have unit-scale weights: GPT-2's init of 0.02
would make every attention type nearly uniform. tests/test_hf.py builds its models here too.
"""
import argparse
import math
import os
import sys
import tempfile
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import export_hf  # noqa: E402
from attention import ATTENTION_TYPES  # noqa: E402
from checkpoint import load_model, save_checkpoint  # noqa: E402
from configurator import TrainConfig  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402


def random_checkpoint(out_dir, attention, context=32, vocab_size=256, tokenizer="bytes", bias=True, seed=0):
    """A checkpoint of a 2-layer GPT (2 heads, width 32) with unit-scale random weights."""
    torch.manual_seed(seed)
    cfg = GPTConfig(block_size=context, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32, attention=attention,
                    bias=bias)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1 / math.sqrt(p.size(1)))
            elif name.endswith("ssmax_scale"):
                p.uniform_(0.2, 0.6)
            else:
                p.normal_(1.0 if name.endswith("weight") else 0.0, 0.1)
    train_config = {**asdict(TrainConfig()), "tokenizer": tokenizer, "attention": attention}
    os.makedirs(out_dir, exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "step": 1, "config": train_config, "model_config": asdict(cfg)},
                    out_dir, 1)
    return out_dir


def all_logits(model, x):
    """GPT's logits at every position (GPT.forward without targets gives only the last)."""
    with torch.no_grad():
        return model.lm_head(model.hidden_states(x))


def logit_diffs(run, folder, multipliers=(1, 16), seed=0):
    """{multiplier: max |logits(transformers) - logits(GPT)|} for one row of random ids each."""
    from transformers import AutoModelForCausalLM
    ours, _ = load_model(run)
    theirs = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m in multipliers:
        x = torch.randint(0, ours.config.vocab_size, (1, m * ours.config.block_size), generator=g)
        with torch.no_grad():
            out[m] = (theirs(x).logits - all_logits(ours, x)).abs().max().item()
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="run directory or checkpoint file")
    p.add_argument("--random", choices=ATTENTION_TYPES, help="a random model of this type instead of a checkpoint")
    p.add_argument("--context", type=int, default=32, help="the random model's training context (default 32)")
    p.add_argument("--portable", action="store_true", help="export to stock gpt_neox (softmax only)")
    args = p.parse_args(argv)
    if (args.checkpoint is None) == (args.random is None):
        p.error("give a checkpoint or --random TYPE")
    with tempfile.TemporaryDirectory() as tmp:
        run = args.checkpoint or random_checkpoint(os.path.join(tmp, "run"), args.random, args.context)
        folder = export_hf.export(run, os.path.join(tmp, "export"), portable=args.portable)
        model, _ = load_model(run)
        T = model.config.block_size
        diffs = logit_diffs(run, folder)
    print(f"{run if args.checkpoint else f'random {args.random}'} ({model.config.attention}, context {T}"
          f"{', portable' if args.portable else ''}): max |logit difference| "
          + ", ".join(f"{m}x ({m * T}): {d:.1e}" for m, d in diffs.items()))


if __name__ == "__main__":
    main()
