"""
Generate text from a checkpoint, also past the training context.

    python scripts/sample.py out/small-lssar --prompt "And God said" --tokens 200
    python scripts/sample.py out/small-lssar --tokens 2000 --temperature 0.8   # 8x a 256 context

RoPE lets every model run past its training length; what the text looks like out there is
the qualitative side of the length sweep. The samples are generated together (--samples rows
of one batch) through GPT.generate's KV cache: each new token costs one step over the cached
keys and values, not a pass over the whole text so far.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from attention import ATTENTION_TYPES  # noqa: E402
from checkpoint import evaluation_overrides, load_model, tokenizer_of  # noqa: E402
from runinfo import pick_device  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="run directory or checkpoint file")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    p.add_argument("--tokens", type=int, default=200, help="tokens to generate")
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top_k", "--top-k", type=int, default=200)
    p.add_argument("--attention", choices=ATTENTION_TYPES, help="generate with another attention type")
    p.add_argument("--p", type=float, default=None, help="the re-weighting power p (with a re-weighted --attention)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    for bad, message in ((args.tokens <= 0,
                          f"--tokens must be a positive number of tokens to generate, got {args.tokens}"),
                         (args.samples <= 0, f"--samples must be a positive number, got {args.samples}"),
                         (args.temperature < 0, f"--temperature must be >= 0 (0: greedy), got {args.temperature}"),
                         (args.top_k <= 0, f"--top_k must be a positive number of candidate tokens, got {args.top_k}")):
        if bad:
            raise SystemExit(f"error: {message}")

    overrides = evaluation_overrides(args.attention, args.p)
    device = pick_device(args.device)
    model, ckpt = load_model(args.checkpoint, device, **overrides)
    tok = tokenizer_of(ckpt)  # GPT-2 BPE or bytes: what the model was trained on
    if model.config.vocab_size < tok.vocab_size:
        raise SystemExit(f"this checkpoint's vocabulary has {model.config.vocab_size} tokens, fewer than {tok.name}'s "
                         f"{tok.vocab_size}: it was not trained on {tok.name} tokens, so there is no text to decode")
    context = model.config.block_size
    prompt = [tok.eot] + tok.encode(args.prompt)
    print(f"# {ckpt['path']} (step {ckpt['step']}, {model.config.attention}, trained at {context} tokens); "
          f"generating {args.tokens} {tok.name} tokens: the prompt plus generation reaches "
          f"{(len(prompt) + args.tokens) / context:.1f}x the training context", file=sys.stderr)
    torch.manual_seed(args.seed)
    idx = torch.tensor([prompt] * args.samples, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast("cpu", enabled=False)
    with autocast:
        out = model.generate(idx, args.tokens, temperature=args.temperature, top_k=args.top_k, vocab=tok.vocab_size)
    for row in out.tolist():
        print(tok.decode(row[1:]))
        print("-" * 60)


if __name__ == "__main__":
    main()
