"""
Plot attention_stats.py results: entropy, sink mass, locality and peak weight of the attention
rows, against inference length and by position.

    python scripts/plot_attention_stats.py results/attention_stats.json -o results/attention_stats.png

Top row: each statistic against inference length (log-2 axis), one colour per checkpoint and
attention type: the thick line is the mean over layers, the thin ones each layer. Bottom row:
the mean over layers by position bucket at each run's longest length. Dashed: the training context.
"""
from plot_length import cli, length_unit, plt, save_figure  # the sibling script; it selects the Agg backend

PANELS = {"entropy": "row entropy H / ln n", "sink": "mass on the first key (sink)",
          "local": "mass on the last block_size keys", "max": "largest weight of the row"}


def plot(runs, out, title=None):
    fig, axes = plt.subplots(2, len(PANELS), figsize=(4.2 * len(PANELS), 8))
    for run in runs:
        lengths = [r["length"] for r in run["results"]]
        longest = max(run["results"], key=lambda r: r["length"])
        mids = [(b["start"] + b["end"]) / 2 for b in longest["layers"][0]["buckets"]]
        for (stat, _), ax_len, ax_pos in zip(PANELS.items(), axes[0], axes[1]):
            line, = ax_len.plot(lengths, [r[stat] for r in run["results"]], marker="o", linewidth=2,
                                label=run["label"])
            for layer in range(len(longest["layers"])):
                ax_len.plot(lengths, [r["layers"][layer][stat] for r in run["results"]], color=line.get_color(),
                            linewidth=0.8, alpha=0.35)
            by_bucket = [sum(layer["buckets"][b][stat] for layer in longest["layers"]) / len(longest["layers"])
                         for b in range(len(mids))]
            ax_pos.plot(mids, by_bucket, marker=".", color=line.get_color(),
                        label=f"{run['label']} (L={longest['length']})")
    unit = length_unit(runs)
    for row, xlabel in zip(axes, (f"inference length ({unit})", f"position in the window (bucket centre, {unit})")):
        for (stat, name), ax in zip(PANELS.items(), row):
            for c in sorted({run["train_context"] for run in runs}):
                ax.axvline(c, color="grey", linestyle="--", linewidth=1)
            ax.set_xscale("log", base=2)
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.set_xlabel(xlabel)
            ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("mean over layers (thin: each layer)")
    axes[1][0].set_ylabel("mean over layers, longest length")
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    save_figure(fig, out)


def main(argv=None):
    cli(plot, __doc__, "attention_stats.py", argv)


if __name__ == "__main__":
    main()
