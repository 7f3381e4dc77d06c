"""
Passkey retrieval: can the model find a number hidden in long filler text?

    python eval_passkey.py out/small-softmax out/small-lssar --lengths 256 512 1024 2048 --trials 20
    python eval_passkey.py out/small-lssa --attention lssar --p 15 --out results/passkey.json

The task of Mohtashami & Jaggi (2023): a random 5-digit pass key sits at a random depth in
repeated filler sentences; after the text the prompt asks for it, and the model decodes
greedily. A trial succeeds when the decoded continuation starts with the key. Accuracy is
reported per length and depth cell: --depths are the cell centres (0 = right after the intro,
1 = just before the question), and each trial draws its depth uniformly within its cell
(cells split [0, 1] halfway between neighbouring centres), so every cell gets the same number
of trials. Every prompt is exactly `length` tokens; keys and depths depend only on --seed,
the length and the cell, so every checkpoint sees the same prompts. JSON out, plotted by
scripts/plot_passkey.py.
"""
import argparse
import os
import random
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone

import torch

from attention import ATTENTION_TYPES, describe
from checkpoint import evaluation_overrides, load_model
from data.tokenizer import EOT, get_encoding
from runinfo import code_version, hardware, keep_freed_memory, pick_device, write_json

# Each piece after the intro starts with its space, so the pieces join into the tokens that
# running text has (" again", ".", " The"), not a lone " " followed by "The".
INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
         "I will quiz you about the important information there.")
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
KEY_LINE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "\nWhat is the pass key? The pass key is"


def build_prompt(enc, length, depth, key):
    """Token ids of exactly `length` tokens: intro, filler with the key line at `depth` (0 =
    right after the intro, 1 = just before the question), the question. The key line goes
    at a sentence boundary of the filler; the filler is cut (at a token) to fit exactly."""
    intro, question = [EOT] + enc.encode(INTRO), enc.encode(QUESTION)
    key_line = enc.encode(KEY_LINE.format(key=key))
    sentence = enc.encode(FILLER)
    room = length - len(intro) - len(key_line) - len(question)
    if room < 0:
        raise ValueError(f"a passkey prompt needs at least {length - room} tokens; got length {length}")
    filler = (sentence * (room // len(sentence) + 2))[:room]
    # the key line goes after a whole number of filler sentences, as close to depth as possible
    cut = min(room, round(depth * room / len(sentence)) * len(sentence))
    return intro + filler[:cut] + key_line + filler[cut:] + question


def answer_of(enc, generated):
    """The leading digits of a decoded continuation (' 71432. Remember' -> '71432')."""
    text = enc.decode(generated).lstrip()
    digits = ""
    for ch in text:
        if not ch.isdigit():
            break
        digits += ch
    return digits


def depth_cells(centres):
    """(low, high) of each depth cell: [0, 1] split halfway between neighbouring centres."""
    centres = sorted(centres)
    if not centres or centres[0] < 0 or centres[-1] > 1 or len(set(centres)) < len(centres):
        raise ValueError(f"--depths must be distinct numbers in [0, 1]; got {centres}")
    edges = [0.0] + [(a + b) / 2 for a, b in zip(centres, centres[1:])] + [1.0]
    return list(zip(edges, edges[1:]))


def draw_trials(seed, length, cell, n):
    """n (key, depth) pairs, the same for every checkpoint: seeded by (seed, length, cell) only."""
    rng = random.Random(f"{seed}-{length}-{cell[0]}-{cell[1]}")
    return [(str(rng.randint(10000, 99999)), rng.uniform(*cell)) for _ in range(n)]


@torch.no_grad()
def run_trials(model, enc, length, trials, device, autocast, batch):
    """Number of correct answers over `trials`, a list of (key, depth)."""
    correct = 0
    answer_tokens = max(len(enc.encode(" " + key)) for key, _ in trials) + 1
    for i in range(0, len(trials), batch):
        chunk = trials[i:i + batch]
        prompts = torch.tensor([build_prompt(enc, length, depth, key) for key, depth in chunk], device=device)
        with autocast:
            out = model.generate(prompts, answer_tokens, temperature=0)
        for (key, _), row in zip(chunk, out[:, length:].tolist()):
            correct += answer_of(enc, row) == key
    return correct


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="run directories or checkpoint files")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="prompt lengths in tokens (default: 1x, 2x, 4x, 8x each checkpoint's training context)")
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="depth cell centres; each trial's depth is drawn uniformly within its cell")
    p.add_argument("--trials", type=int, default=20, help="trials (keys) per length and depth")
    p.add_argument("--seed", type=int, default=0, help="seeds the keys and the depths within each cell")
    p.add_argument("--attention", choices=ATTENTION_TYPES, help="evaluate with this attention type")
    p.add_argument("--p", type=float, default=None, help="re-weighting power p at evaluation")
    p.add_argument("--batch", type=int, default=None, help="prompts per forward pass (default 16 on GPU, 4 on CPU)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="JSON path")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    cells = depth_cells(args.depths)
    overrides = evaluation_overrides(args.attention, args.p)
    device = pick_device(args.device)
    on_gpu = device.startswith("cuda")
    if not on_gpu:
        keep_freed_memory()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else nullcontext()
    enc = get_encoding()
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", "eval_passkey.py"] + argv), "code": code_version(),
              "hardware": hardware(device), "trials": args.trials, "seed": args.seed, "runs": []}
    for path in args.checkpoints:
        model, ckpt = load_model(path, device, **overrides)
        if ckpt["config"]["tokenizer"] != "gpt2":
            # the prompts are sized and cut in GPT-2 tokens; at a few bytes per token a byte-level
            # model's context would not even hold the instructions
            raise SystemExit(f"{ckpt['path']}: trained on {ckpt['config']['tokenizer']} tokens; the passkey test is "
                             f"built for GPT-2 tokens (train on GPT-2 shards, e.g. config/small_gpu.py)")
        if model.config.vocab_size < enc.n_vocab:
            raise SystemExit(f"{ckpt['path']}: vocabulary of {model.config.vocab_size} tokens is not GPT-2's")
        context = ckpt["model_config"]["block_size"]
        lengths = args.lengths or [m * context for m in (1, 2, 4, 8)]
        run_name = os.path.basename(os.path.dirname(ckpt["path"]))
        label = f"{run_name} [{describe(model.config.attention, model.config.reweight_p)}]"
        results = []
        for length in lengths:
            for depth, cell in zip(sorted(args.depths), cells):
                trials = draw_trials(args.seed, length, cell, args.trials)
                t0 = time.time()
                correct = run_trials(model, enc, length, trials, device, autocast, args.batch or (16 if on_gpu else 4))
                results.append({"length": length, "depth": depth, "depth_range": list(cell), "trials": len(trials),
                                "correct": correct, "accuracy": correct / len(trials),
                                "time_s": round(time.time() - t0, 2)})
                print(f"  {label:<30} L={length:>6} depth={cell[0]:.2f}-{cell[1]:.2f}  {correct}/{len(trials)}")
        by_length = {L: sum(r["correct"] for r in results if r["length"] == L) /
                     sum(r["trials"] for r in results if r["length"] == L) for L in lengths}
        report["runs"].append({"checkpoint": ckpt["path"], "run": run_name, "label": label, "step": ckpt["step"],
                               "trained_attention": ckpt["model_config"]["attention"],
                               "attention": model.config.attention, "reweight_p": model.config.reweight_p,
                               "overrides": overrides, "train_context": context, "results": results,
                               "accuracy_by_length": {str(L): a for L, a in by_length.items()}})
        print(f"{label}: accuracy by length " + ", ".join(f"{L}: {a:.0%}" for L, a in by_length.items()))
        del model
    if args.out:
        write_json(report, args.out)
    return report


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
