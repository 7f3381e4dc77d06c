"""
A markdown table of eval_length.py results, for the README and notes.

    python scripts/table_length.py results/small/small.json

One row per checkpoint and attention type: the run's last train and validation loss (from
its metrics.jsonl, at the training context), the sweep's loss at each multiple of the
training context, and the ratio of the longest to the 1x loss.
"""
import argparse

from plot_length import evaluated_as, load_runs  # the sibling script; it puts the repository on sys.path


def markdown(runs):
    multipliers = sorted({r["length"] / run["train_context"] for run in runs for r in run["results"]})
    head = ["run", "evaluated as", "train loss", "val loss"] + [f"{m:g}x" for m in multipliers] + ["last / 1x"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else "–"
    for run in runs:
        by_m = {r["length"] / run["train_context"]: r["loss"] for r in run["results"]}
        training = run.get("training", {})
        ratio = by_m[max(by_m)] / by_m[min(by_m)]
        cells = [run["run"], evaluated_as(run), fmt(training.get("train_loss")), fmt(training.get("val_loss"))]
        cells += [fmt(by_m.get(m)) for m in multipliers] + [f"{ratio:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="JSON files written by eval_length.py --out")
    p.add_argument("--out", help="also write the table to this file")
    args = p.parse_args(argv)
    table = markdown(load_runs(args.results))
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
