"""
What the attention does past the training length: row entropy, sink mass, locality and peak
weight, per layer and head, at 1x-16x the training context.

    python scripts/attention_stats.py out/demo-softmax out/demo-lssa out/demo-lssar --out results/attention_stats.json
    python scripts/attention_stats.py out/demo-lssa --attention lssar --p 15 --out results/x.json  # re-weighted
    python scripts/plot_attention_stats.py results/attention_stats.json -o results/attention_stats.png

For each checkpoint and length, `--windows` validation windows are drawn (seeded), and in each
position bucket (by default one training context) `--rows` query positions (seeded; the same
in every window and for every checkpoint, so checkpoints are compared on the same rows). Every
layer's q and k are taken after RoPE as the model runs, and each sampled row i is computed with
attention.attention_weights against its n = i + 1 visible keys only: one row at a time, never a
T x T matrix, so memory stays bounded at 16x. Per row, of the weights a_j normalised to sum 1
(sigmoid and relu rows do not sum to 1: their mean row sum is reported as "mass"; a relu row
with no weight at all has no distribution and is left out):

  entropy  -sum_j a_j ln a_j / ln n   1 = uniform over the visible keys, 0 = one key
  sink     a_0                         the weight on the first token (the attention sink)
  local    sum of a_j over the last block_size keys (1 at or below the training length)
  max      max_j a_j                   the row's largest weight

averaged per layer, per head and per position bucket. Position 0 (one visible key) is never
sampled. The type is the model's own, or --attention/--p, as eval_length.py.
"""
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from attention import attention_weights, describe  # noqa: E402
from checkpoint import load_model  # noqa: E402
from data.shards import ShardError  # noqa: E402
from eval_length import positive, run_label, run_record, start_sweep, sweep_arguments, validation_tokens  # noqa: E402
from runinfo import write_json  # noqa: E402

STATS = ("entropy", "sink", "local", "max", "mass")


def row_stats(a, block_size):
    """The statistics (dict name -> tensor of the leading shape) of attention rows a (..., n),
    every entry a visible key, n >= 2. A row without weight (relu's can be all zero) has no
    distribution: its statistics are nan, its mass 0."""
    n = a.size(-1)
    mass = a.sum(-1)
    dist = a / mass.unsqueeze(-1)                       # 0/0 = nan for an empty row
    return {
        "entropy": -torch.special.xlogy(dist, dist).sum(-1) / math.log(n),   # 0·ln 0 = 0
        "sink": dist[..., 0],
        "local": dist[..., -block_size:].sum(-1),
        "max": dist.amax(-1),
        "mass": mass,
    }


def layer_row_stats(q, k, kind, p, positions, block_size, head_scale=None):
    """Statistics of query rows `positions` of one layer, q and k (B, H, T, d) after RoPE:
    dict name -> (B, H, len(positions)). Each row is computed against its visible keys only."""
    out = {name: [] for name in STATS}
    with torch.autocast(device_type=q.device.type, enabled=False):   # fp32 weights, as the reference
        for i in positions:
            a = attention_weights(q[:, :, i:i + 1], k[:, :, :i + 1], kind, p, q_start=i, head_scale=head_scale)
            for name, value in row_stats(a[:, :, 0], block_size).items():
                out[name].append(value)
    return {name: torch.stack(values, dim=-1) for name, values in out.items()}


def sample_positions(length, bucket, rows, rng):
    """Per position bucket, `rows` distinct query positions (all of them if the bucket has
    fewer), sorted; position 0 excluded."""
    out = []
    for start in range(0, length, bucket):
        candidates = np.arange(max(start, 1), min(length, start + bucket))
        out.append(np.sort(rng.choice(candidates, size=min(rows, len(candidates)), replace=False)))
    return out


def sample_windows(tokens, length, n_windows, rng):
    """n_windows distinct non-overlapping validation windows of `length` input tokens, drawn
    at random from all that fit, as int64 (n_windows, length)."""
    fit = len(tokens) // length
    if fit < n_windows:
        raise ShardError(f"validation set has {len(tokens):,} tokens: {fit} window(s) of {length:,}, "
                         f"{n_windows} asked for; use fewer --windows or shorter lengths")
    starts = np.sort(rng.choice(fit, size=n_windows, replace=False)) * length
    return np.stack([np.asarray(tokens[s:s + length]) for s in starts]).astype(np.int64)


@torch.no_grad()
def stats_one_length(model, windows, buckets, batch, autocast):
    """Sums and counts of every statistic, (len(STATS), n_layer, n_buckets, n_head) and
    (n_layer, n_buckets, n_head), over the windows and the sampled rows of each bucket."""
    cfg = model.config
    device = next(model.parameters()).device
    positions = [int(i) for b in buckets for i in b]
    bucket_of = torch.tensor([b for b, rows in enumerate(buckets) for _ in rows], device=device)
    sums = torch.zeros(len(STATS), cfg.n_layer, len(buckets), cfg.n_head, dtype=torch.float64, device=device)
    counts = torch.zeros(cfg.n_layer, len(buckets), cfg.n_head, dtype=torch.float64, device=device)

    def record(layer, module, q, k):
        stats = layer_row_stats(q, k, module.attention, module.p, positions, cfg.block_size, module.ssmax_scale)
        valid = ~stats["entropy"].isnan()                                       # (B, H, rows)
        for s, name in enumerate(STATS):
            per_row = torch.where(valid, stats[name], 0.0).double().sum(0)      # (H, rows)
            sums[s, layer].index_add_(0, bucket_of, per_row.T)
        counts[layer].index_add_(0, bucket_of, valid.double().sum(0).T)

    capture_qk(model, windows, batch, autocast, record)
    return sums.cpu(), counts.cpu()


@torch.no_grad()
def capture_qk(model, windows, batch, autocast, on_layer):
    """Run the model over windows (int64 (N, T) numpy), `batch` at a time, and call
    on_layer(layer, attention module, q, k) for every layer of every batch, q and k (B, H, T, d)
    after RoPE: recomputed from the block's input, so exactly what the attention saw. Only the
    model's activations and one layer's q, k live at once; what on_layer keeps is its own."""
    device = next(model.parameters()).device

    def hook(layer):
        def record(module, args, output):
            q, k, _ = module.qkv(*args)
            on_layer(layer, module, q, k)
        return record

    handles = [block.attn.register_forward_hook(hook(i)) for i, block in enumerate(model.transformer.h)]
    try:
        for i in range(0, len(windows), batch):
            with autocast:
                model.hidden_states(torch.from_numpy(windows[i:i + batch]).to(device))
    finally:
        for h in handles:
            h.remove()


def summarise(sums, counts, length, bucket):
    """(overall means, per-layer entries): each layer's means over its rows and heads, per head,
    per bucket, and per bucket and head; the overall means are the layers' average."""
    def means(s, c):
        return {name: (s[i] / c).tolist() for i, name in enumerate(STATS)}

    layers = []
    for layer in range(sums.size(1)):
        s, c = sums[:, layer], counts[layer]                                   # (S, buckets, H), (buckets, H)
        layers.append({"layer": layer, **means(s.sum((1, 2)), c.sum()), "heads": means(s.sum(1), c.sum(0)),
                       "buckets": [{"start": b * bucket, "end": min(length, (b + 1) * bucket),
                                    **means(s[:, b].sum(1), c[b].sum()), "heads": means(s[:, b], c[b])}
                                   for b in range(s.size(1))]})
    overall = {name: float(np.nanmean([entry[name] for entry in layers])) for name in STATS}
    return rounded(overall), rounded(layers)


def rounded(x, digits=6):
    """x with every float rounded (the JSON stays readable; sampling noise is far larger)."""
    if isinstance(x, dict):
        return {k: rounded(v, digits) for k, v in x.items()}
    if isinstance(x, list):
        return [rounded(v, digits) for v in x]
    return round(x, digits) if isinstance(x, float) else x


def parse_args(argv):
    p = sweep_arguments(__doc__)
    p.add_argument("--windows", type=positive, default=8, help="validation windows per length (default 8)")
    p.add_argument("--rows", type=positive, default=32,
                   help="query positions sampled per position bucket, the same in every window (default 32)")
    p.add_argument("--seed", type=int, default=0, help="draws the windows and rows (default 0)")
    p.add_argument("--out", default=None, help="JSON path")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    overrides, device, autocast, batch_tokens, report = start_sweep(args, "scripts/attention_stats.py", argv)
    report.update(windows=args.windows, rows_per_bucket=args.rows, seed=args.seed)
    token_cache = {}
    for path in args.checkpoints:
        model, ckpt = load_model(path, device, **overrides)
        context = model.config.block_size
        bucket = args.bucket or context
        data_dir, tokens = validation_tokens(ckpt, args.data_dir, token_cache)
        label = run_label(model, ckpt)
        print(f"{ckpt['path']}: trained with {ckpt['model_config']['attention']} at context {context}, "
              f"step {ckpt['step']}; attention of {describe(model.config.attention, model.config.reweight_p)} "
              f"from {data_dir}")
        results = []
        for length in args.lengths or [m * context for m in args.multipliers]:
            rng = np.random.default_rng([args.seed, length])   # the same windows and rows for every checkpoint
            windows = sample_windows(tokens, length, args.windows, rng)
            buckets = sample_positions(length, bucket, args.rows, rng)
            t0 = time.time()
            sums, counts = stats_one_length(model, windows, buckets, max(1, batch_tokens // length), autocast)
            overall, layers = summarise(sums, counts, length, bucket)
            results.append({"length": length, "windows": len(windows), "rows": sum(len(b) for b in buckets),
                            **overall, "time_s": round(time.time() - t0, 2), "layers": layers})
            print(f"  {label:<28} L={length:>6}  " + "  ".join(f"{name} {overall[name]:.3f}" for name in STATS[:4]))
        report["runs"].append(run_record(model, ckpt, overrides, data_dir, bucket=bucket, results=results))
        del model
    if args.out:
        write_json(report, args.out)
    return report


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ShardError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
