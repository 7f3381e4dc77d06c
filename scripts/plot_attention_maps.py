"""
Attention maps: the weights of chosen layers and heads over one validation window, at 1x and
16x the training context (the paper's appendix figures), one PNG per checkpoint.

    python scripts/plot_attention_maps.py out/demo-lssar -o results/maps/demo-lssar.png
    python scripts/plot_attention_maps.py out/demo-lssa --attention lssar --p 15 --layers 0 3 --heads 0 1 -o x.png

A map at length L shows --rows query rows, evenly spaced over the window, against the keys in
--rows bins of L / rows positions each: each cell is the attention mass a row puts on that
bin (log colour scale; white where there is no weight: above the diagonal, where keys are not
visible, and lssar's exact zeros). The q and k are
captured as scripts/attention_stats.py captures them (after RoPE, as the model runs) and each
row is computed against its visible keys only, one row at a time: memory stays bounded at 16x.
The window is drawn from the validation split (seeded, as attention_stats.py draws its windows).
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling scripts

import numpy as np  # noqa: E402
import torch  # noqa: E402
from attention_stats import capture_qk, sample_windows  # noqa: E402
from plot_length import length_unit, plt, save_figure  # noqa: E402 (selects the Agg backend)

from attention import attention_weights  # noqa: E402
from checkpoint import load_model  # noqa: E402
from data.shards import ShardError  # noqa: E402
from eval_length import positive, run_label, start_sweep, sweep_arguments, validation_tokens  # noqa: E402


def map_rows(length, rows):
    """The query positions of a map: `rows` evenly spaced over the window, the last one included."""
    return sorted({max(1, round((r + 1) * length / rows) - 1) for r in range(rows)})


def binned_map(q, k, kind, p, positions, bins, head_scale=None):
    """(H, len(positions), bins) attention mass of each row on each bin of keys (bin b holds
    positions [b·T/bins, (b+1)·T/bins)), from q, k (1, H, T, d); one row at a time."""
    T, H = q.size(2), q.size(1)
    out = torch.zeros(H, len(positions), bins, dtype=torch.float64)
    key_bin = (torch.arange(T) * bins // T).to(q.device)
    with torch.autocast(device_type=q.device.type, enabled=False):
        for r, i in enumerate(positions):
            a = attention_weights(q[:, :, i:i + 1].float(), k[:, :, :i + 1].float(), kind, p, q_start=i,
                                  head_scale=head_scale)[0, :, 0]                      # (H, i + 1)
            mass = torch.zeros(H, bins, dtype=torch.float64, device=q.device)
            out[:, r] = mass.index_add_(1, key_bin[:i + 1], a.double()).cpu()
    return out


def maps_of(model, tokens, lengths, rows, layers, heads, seed, autocast):
    """{(length, layer, head): (rows, bins) map} of one checkpoint: one window per length."""
    maps = {}
    for length in lengths:
        window = sample_windows(tokens, length, 1, np.random.default_rng([seed, length]))
        positions = map_rows(length, rows)

        def record(layer, module, q, k):
            if layer in layers:
                m = binned_map(q[:, heads], k[:, heads], module.attention, module.p, positions, rows,
                               None if module.ssmax_scale is None else module.ssmax_scale[heads])
                for h, head in enumerate(heads):
                    maps[length, layer, head] = m[h].numpy()

        capture_qk(model, window, 1, autocast, record)
    return maps


def plot(maps, lengths, layers, heads, context, title, unit, out):
    pairs = [(layer, head) for layer in layers for head in heads]
    fig, axes = plt.subplots(len(pairs), len(lengths), figsize=(4 * len(lengths) + 1, 3.6 * len(pairs)),
                             squeeze=False, layout="constrained")
    for row, (layer, head) in enumerate(pairs):
        for col, length in enumerate(lengths):
            m = np.ma.masked_less_equal(maps[length, layer, head], 0)   # invisible keys (and exact zeros) blank
            ax = axes[row][col]
            image = ax.imshow(m, origin="upper", aspect="auto", extent=(0, length, length, 0), cmap="viridis",
                              norm=plt.matplotlib.colors.LogNorm(vmin=1e-4, vmax=1))
            ax.set_title(f"layer {layer}, head {head}, L={length} ({length / context:g}x)", fontsize=9)
            ax.set_xlabel(f"key position ({unit})")
            ax.set_ylabel(f"query position ({unit})")
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention mass per key bin")
    fig.suptitle(title)
    save_figure(fig, out, tight=False)


def parse_args(argv):
    p = sweep_arguments(__doc__)
    p.set_defaults(multipliers=[1, 16])
    p.add_argument("--layers", type=int, nargs="+", default=[0, -1], help="layers to draw (default 0 -1: first, last)")
    p.add_argument("--heads", type=int, nargs="+", default=[0], help="heads to draw (default 0)")
    p.add_argument("--rows", type=positive, default=64, help="query rows and key bins of a map (default 64)")
    p.add_argument("--seed", type=int, default=0, help="draws the window (default 0)")
    p.add_argument("-o", "--out", required=True, help="PNG path (with one checkpoint), or a folder (with several)")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    overrides, device, autocast, _, _ = start_sweep(args, "scripts/plot_attention_maps.py", argv)
    token_cache = {}
    for path in args.checkpoints:
        model, ckpt = load_model(path, device, **overrides)
        cfg = model.config
        layers = sorted({layer % cfg.n_layer for layer in args.layers})
        heads = sorted({head % cfg.n_head for head in args.heads})
        _, tokens = validation_tokens(ckpt, args.data_dir, token_cache)
        lengths = args.lengths or [m * cfg.block_size for m in args.multipliers]
        maps = maps_of(model, tokens, lengths, min(args.rows, min(lengths)), layers, heads, args.seed, autocast)
        out = args.out
        if len(args.checkpoints) > 1:
            out = os.path.join(args.out, os.path.basename(os.path.dirname(ckpt["path"])) + ".png")
        unit = length_unit([{"config": ckpt["config"]}])
        plot(maps, lengths, layers, heads, cfg.block_size, run_label(model, ckpt), unit, out)
        del model


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (ShardError, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
