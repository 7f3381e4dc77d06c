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
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from attention import describe  # noqa: E402


def load_runs(paths, producer="eval_length.py"):
    """The runs of eval_length.py result files (or those of eval_passkey.py or attention_stats.py, for
    the sibling plot scripts), in order."""
    field = {"eval_length.py": "loss", "eval_passkey.py": "accuracy", "attention_stats.py": "entropy"}[producer]
    runs = []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        if not all(field in r for run in report.get("runs", [{}]) for r in run.get("results", [{}])):
            hint = " (plot passkey results with scripts/plot_passkey.py)" if producer == "eval_length.py" else ""
            raise SystemExit(f"{path} is not an {producer} result: its runs have no {field!r}{hint}")
        runs.extend(report["runs"])
    return runs


def evaluated_as(run):
    """The attention a run was evaluated with ("lssar p=15"), and what it was trained with
    where an evaluation override changed it ("lssar p=15 (trained lssa)")."""
    evaluated = describe(run["attention"], run["reweight_p"])
    return evaluated + (f" (trained {run['trained_attention']})" if run.get("overrides") else "")


def legend(runs, title):
    """Labels that show what differs between the curves, and the title with what they share.

    Runs are labelled by evaluated_as(); the run names' common prefix ("small-cpu" for
    small-cpu-softmax, small-cpu-lssa, ...) goes into the title instead, unless the title says it
    already. Runs that the attention alone does not tell apart also get the rest of their name."""
    names = [run["run"] for run in runs]
    prefix = os.path.commonprefix(names)
    if len(set(names)) > 1:  # cut back to a whole name part: small-cpu-lss -> small-cpu
        prefix = prefix[:max(prefix.rfind("-"), prefix.rfind("_"), 0)]
    labels = [evaluated_as(run) for run in runs]
    labels = [f"{label}, {name[len(prefix):].lstrip('-_') or name}" if labels.count(label) > 1 else label
              for label, name in zip(labels, names)]
    if prefix and prefix not in title:
        title = f"{prefix}: {title}"
    return labels, title


def length_unit(runs):
    """What a length counts in these runs' results: "bytes" for byte-level models, else "tokens"."""
    return "bytes" if all(run.get("config", {}).get("tokenizer") == "bytes" for run in runs) else "tokens"


def plot(runs, out, title=None):
    fig, (ax_len, ax_pos) = plt.subplots(1, 2, figsize=(13, 4.8))
    contexts = sorted({run["train_context"] for run in runs})
    labels, title = legend(runs, title or "loss vs inference length")
    for run, label in zip(runs, labels):
        lengths = [r["length"] for r in run["results"]]
        line, = ax_len.plot(lengths, [r["loss"] for r in run["results"]], marker="o", label=label)
        longest = max(run["results"], key=lambda r: r["length"])
        mids = [(b["start"] + b["end"]) / 2 for b in longest["buckets"]]
        ax_pos.plot(mids, [b["loss"] for b in longest["buckets"]], marker=".", color=line.get_color(),
                    label=f"{label} (L={longest['length']})")
    for ax in (ax_len, ax_pos):
        for c in contexts:
            ax.axvline(c, color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.grid(True, alpha=0.3)
        ax.set_ylabel("validation loss")
    unit = length_unit(runs)
    ax_len.set_xlabel(f"inference length ({unit}); dashed: training context")
    ax_len.set_title(title)
    ax_pos.set_xlabel(f"position in the window (bucket centre, {unit})")
    ax_pos.set_title("loss by position at the longest length")
    ax_len.legend(fontsize=8)
    ax_pos.legend(fontsize=8)
    save_figure(fig, out)


def save_figure(fig, out, tight=True):
    if tight:   # not with a colorbar spanning several axes
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
