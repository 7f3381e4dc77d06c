"""
Generation speed: tokens/s and memory of the prompt (prefill) and of each new token (decode),
with GPT.generate's KV cache, without it (every token runs the whole sequence again), and with
the exported Hugging Face model's generate (its own cache, through hf_lssa.py).

    nice python scripts/bench_generate.py --contexts 1024 4096 --batches 1 8 --out results/bench_generate/cpu.json
    python scripts/bench_generate.py config/paper_124m.py --device cuda --contexts 1024 4096 16384 \
        --out results/bench_generate/gpu.json                                       # GPT-2 124M shapes

The model has the config's shape (default config/demo_cpu.py, the CPU demo's model) and GPT-2's
initialisation, one per attention type: speed does not depend on the weights. A context of L
tokens is a random prompt of L tokens; decode then adds --new tokens (greedy, whatever they are),
and the no-cache path --no_cache_new (each one a full pass over L + t tokens: slow by design).
Prefill tokens/s counts the prompt's B x L tokens; decode tokens/s the B new tokens per step.
With --hf, whole generate calls (prompt and --new tokens) of ours and of transformers' are timed
side by side.
Memory: on a GPU the peak allocated during each phase; on the CPU the KV cache's size and the
process's peak resident memory so far (the CPU allocator keeps no per-phase peak).
Writes JSON with the command, code version and hardware (runinfo).
"""
import argparse
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from attention import ATTENTION_TYPES  # noqa: E402
from checkpoint import save_checkpoint  # noqa: E402
from configurator import load_config  # noqa: E402
from model import GPT, KVCache, config_from_preset  # noqa: E402
from runinfo import code_version, hardware, pick_device, write_json  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", default="config/demo_cpu.py", help="the model's shape (a train.py config)")
    p.add_argument("--attention", nargs="+", default=["softmax", "lssa", "lssar"], choices=ATTENTION_TYPES)
    p.add_argument("--contexts", nargs="+", type=int, default=[1024, 4096, 16384], help="prompt lengths")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--new", type=int, default=32, help="tokens decoded with the cache")
    p.add_argument("--no_cache_new", type=int, default=4, help="tokens decoded without it (0: skip)")
    p.add_argument("--hf", action="store_true", help="also time whole generate calls, ours and the exported "
                   "Hugging Face model's (needs transformers)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's); on a machine "
                   "shared with other work, 1 keeps the threads from waiting on each other")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="JSON path")
    args = p.parse_args(argv)
    for name in ("contexts", "batches"):
        if min(getattr(args, name)) < 1:
            p.error(f"--{name} must be positive integers, got {getattr(args, name)}")
    if args.new < 2 or args.no_cache_new < 0:
        p.error("--new must be at least 2 and --no_cache_new at least 0")
    return args


def build(cfg, kind, device):
    """A GPT of the config's shape with attention `kind` (bytes vocabulary for a -bytes dataset)."""
    vocab = cfg.vocab_size or (256 if cfg.dataset.endswith("-bytes") else 50304)
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd") if getattr(cfg, k)}
    torch.manual_seed(0)
    config = config_from_preset(cfg.model, **shape, block_size=cfg.block_size, vocab_size=vocab, attention=kind,
                                reweight_p=cfg.reweight_p, bias=cfg.bias)
    return GPT(config).to(device).eval()


class Meter:
    """Wall time and memory of one phase."""

    def __init__(self, device):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.memory = {"peak_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
        else:   # Linux reports kB
            self.memory = {"process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        self.seconds = time.perf_counter() - self.t0


@torch.no_grad()
def cached(model, prompt, new, device):
    """Prefill and decode through a KVCache, as GPT.generate runs them."""
    B, L = prompt.shape
    cache = KVCache(model.config, B, L + new, None, prompt.device, torch.float32)
    with Meter(device) as pre:
        token = model.lm_head(model.hidden_states(prompt, cache)[:, -1]).argmax(-1, keepdim=True)
    with Meter(device) as dec:
        for _ in range(new):
            token = model.lm_head(model.hidden_states(token, cache)[:, -1]).argmax(-1, keepdim=True)
    cache_mib = round((cache.k.nelement() + cache.v.nelement()) * cache.k.element_size() / 2**20, 1)
    return {"prefill_tokens_per_s": round(B * L / pre.seconds, 1), "prefill_s": round(pre.seconds, 6),
            "prefill_memory": pre.memory, "decode_tokens_per_s": round(B * new / dec.seconds, 2),
            "decode_ms_per_step": round(1000 * dec.seconds / new, 2), "decode_memory": dec.memory,
            "kv_cache_mib": cache_mib}


@torch.no_grad()
def no_cache(model, prompt, new, device):
    """Decode without a cache: every token a forward pass over the whole sequence so far."""
    with Meter(device) as dec:
        model.generate(prompt, new, temperature=0, use_cache=False)
    B = prompt.size(0)
    return {"decode_tokens_per_s": round(B * new / dec.seconds, 2),
            "decode_ms_per_step": round(1000 * dec.seconds / new, 2),
            "decode_memory": dec.memory}


@torch.no_grad()
def generate_s(generate, prompt, new, device):
    """Wall time of a whole generate call: the prompt, then `new` greedy tokens."""
    with Meter(device) as m:
        generate(prompt, new)
    B = prompt.size(0)
    return {"seconds": round(m.seconds, 4), "new_tokens_per_s": round(B * new / m.seconds, 2), "memory": m.memory}


def ours(model):
    return lambda prompt, n: model.generate(prompt, n, temperature=0)


def hf_generate(hf):
    """transformers' generate, greedy, its own cache, exactly n new tokens."""
    return lambda prompt, n: hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n,
                                         min_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)


def export(model, cfg, folder):
    """The model as a checkpoint, exported as a transformers folder (export_hf.py)."""
    import export_hf
    train_config = {**asdict(cfg), "tokenizer": "bytes" if model.config.vocab_size == 256 else "gpt2",
                    "attention": model.config.attention}
    run = os.path.join(folder, "run")
    os.makedirs(run, exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "step": 0, "config": train_config,
                     "model_config": asdict(model.config)}, run, 0)
    return export_hf.export(run, os.path.join(folder, "hf"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    cfg = load_config([args.config])
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"command": " ".join(["python", "scripts/bench_generate.py"] + argv), "code": code_version(),
              "hardware": hardware(device), "config": args.config, "threads": torch.get_num_threads(),
              "load_average_before": round(os.getloadavg()[0], 1), "results": []}
    for kind in args.attention:
        model = build(cfg, kind, device)
        hf = None
        if args.hf:
            from transformers import AutoModelForCausalLM
            tmp = tempfile.TemporaryDirectory()
            hf = AutoModelForCausalLM.from_pretrained(export(model, cfg, tmp.name), trust_remote_code=True)
            hf = hf.to(device).eval()
        cached(model, torch.zeros(1, 8, dtype=torch.long, device=device), 2, device)   # warm-up: first-call costs
        for L in args.contexts:
            for B in args.batches:
                prompt = torch.randint(0, model.config.vocab_size, (B, L), generator=torch.Generator().manual_seed(L),
                                       device="cpu").to(device)
                row = {"attention": kind, "context": L, "batch": B, "new": args.new,
                       "model": {k: getattr(model.config, k) for k in ("n_layer", "n_head", "n_embd", "vocab_size",
                                                                       "block_size")},
                       "cached": cached(model, prompt, args.new, device)}
                if args.no_cache_new:
                    row["no_cache"] = no_cache(model, prompt, args.no_cache_new, device)
                    row["decode_speedup"] = round(row["cached"]["decode_tokens_per_s"] /
                                                  row["no_cache"]["decode_tokens_per_s"], 1)
                if hf is not None:   # whole generate calls, ours (cached) and transformers', prompt included
                    row["generate"] = {"ours": generate_s(ours(model), prompt, args.new, device),
                                       "hf": generate_s(hf_generate(hf), prompt, args.new, device)}
                report["results"].append(row)
                c = row["cached"]
                print(f"{kind:<8} L={L:<6} B={B:<3} prefill {c['prefill_tokens_per_s']:>10.0f} tok/s   decode "
                      f"{c['decode_tokens_per_s']:>8.1f} tok/s"
                      + (f"   no cache {row['no_cache']['decode_tokens_per_s']:>7.2f} tok/s "
                         f"({row['decode_speedup']}x)" if "no_cache" in row else "")
                      + (f"   generate: ours {row['generate']['ours']['seconds']:.2f} s, transformers "
                         f"{row['generate']['hf']['seconds']:.2f} s" if "generate" in row else ""),
                      flush=True)
                if args.out:   # after every row: an interrupted run keeps what it measured
                    write_json(report, args.out)
        if args.hf:
            tmp.cleanup()
    report["load_average_after"] = round(os.getloadavg()[0], 1)
    if args.out:
        write_json(report, args.out)
    return report


if __name__ == "__main__":
    main()
