"""
Plot eval_length.py results: loss against inference length, and loss by position.

    python scripts/plot_length.py results/small.json -o results/small.png

Left: all-position validation loss against inference length (log-2 axis), one line per
checkpoint and attention type, the training context marked. Right: loss by position bucket
at each run's longest length, which shows where beyond the training context the loss goes.
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402


def load_runs(paths, producer="eval_length.py"):
    """The runs of eval_length.py (or, for plot_passkey.py, eval_passkey.py) result files, in order."""
    field = {"eval_length.py": "loss", "eval_passkey.py": "accuracy"}[producer]
    runs = []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        if not all(field in r for run in report.get("runs", [{}]) for r in run.get("results", [{}])):
            hint = " (plot passkey results with scripts/plot_passkey.py)" if producer == "eval_length.py" else ""
            raise SystemExit(f"{path} is not an {producer} result: its runs have no {field!r}{hint}")
        runs.extend(report["runs"])
    return runs


def plot(runs, out, title=None):
    fig, (ax_len, ax_pos) = plt.subplots(1, 2, figsize=(13, 4.8))
    contexts = sorted({run["train_context"] for run in runs})
    for run in runs:
        lengths = [r["length"] for r in run["results"]]
        line, = ax_len.plot(lengths, [r["loss"] for r in run["results"]], marker="o", label=run["label"])
        longest = max(run["results"], key=lambda r: r["length"])
        mids = [(b["start"] + b["end"]) / 2 for b in longest["buckets"]]
        ax_pos.plot(mids, [b["loss"] for b in longest["buckets"]], marker=".", color=line.get_color(),
                    label=f"{run['label']} (L={longest['length']})")
    for ax in (ax_len, ax_pos):
        for c in contexts:
            ax.axvline(c, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.set_ylabel("validation loss")
    unit = "bytes" if all(run.get("config", {}).get("tokenizer") == "bytes" for run in runs) else "tokens"
    ax_len.set_xlabel(f"inference length ({unit}); dashed: training context")
    ax_len.set_title(title or "loss vs inference length")
    ax_pos.set_xlabel(f"position in the window (bucket centre, {unit})")
    ax_pos.set_title("loss by position at the longest length")
    ax_len.legend(fontsize=8)
    ax_pos.legend(fontsize=8)
    save_figure(fig, out)


def save_figure(fig, out):
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"wrote {out}")


def cli(plot_fn, doc, producer, argv=None):
    """The command line of this script and its sibling plot_passkey.py."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help=f"JSON files written by {producer} --out")
    p.add_argument("-o", "--out", required=True, help="PNG path")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    plot_fn(load_runs(args.results, producer), args.out, args.title)


def main(argv=None):
    cli(plot, __doc__, "eval_length.py", argv)


if __name__ == "__main__":
    main()
