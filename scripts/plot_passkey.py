"""
Plot eval_passkey.py results: retrieval accuracy against prompt length, and against depth.

    python scripts/plot_passkey.py results/small/passkey.json -o results/small/passkey.png
"""
from plot_length import cli, legend, plt, save_figure  # the sibling script; it selects the Agg backend


def plot(runs, out, title=None):
    fig, (ax_len, ax_depth) = plt.subplots(1, 2, figsize=(13, 4.8))
    labels, title = legend(runs, title or "passkey retrieval accuracy")
    for run, label in zip(runs, labels):
        lengths = sorted(int(L) for L in run["accuracy_by_length"])
        line, = ax_len.plot(lengths, [run["accuracy_by_length"][str(L)] for L in lengths], marker="o", label=label)
        longest = [r for r in run["results"] if r["length"] == lengths[-1]]
        ax_depth.plot([r["depth"] for r in longest], [r["accuracy"] for r in longest], marker="o",
                      color=line.get_color(), label=f"{label} (L={lengths[-1]})")
    for c in sorted({run["train_context"] for run in runs}):
        ax_len.axvline(c, color="grey", linestyle="--", linewidth=1)
    ax_len.set_xscale("log", base=2)
    ax_len.set_xlabel("prompt length (tokens); dashed: training context")
    ax_len.set_title(title)
    ax_depth.set_xlabel("depth of the key in the filler (0 = start, 1 = end)")
    ax_depth.set_title("accuracy by depth at the longest length")
    for ax in (ax_len, ax_depth):
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("accuracy")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, out)


def main(argv=None):
    cli(plot, __doc__, "eval_passkey.py", argv)


if __name__ == "__main__":
    main()
