"""
One report per reproduction: results/<name>/report.md, built from what the reproduction wrote there.

    python scripts/report.py results/small-cpu     # -> results/small-cpu/report.md and its plots:
                                                   # length.png, curves.png (passkey.png, attention_stats.png)

Reads every result JSON under the folder (whatever wrote it: scripts/reproduce_paper.sh puts one
file per run in sweep/, passkey/, ..., scripts/reproduce_small.sh one file per group) and tells
them apart by content: eval_length.py, eval_passkey.py, eval_downstream.py, attention_stats.py.
The report has:
  - the loss-vs-length table in the paper's layout, ours beside the paper's numbers
    (scripts/paper_numbers.py) at the same multiple of the training context, and the difference;
  - every run's sweep (scripts/table_length.py's table) and, apart, the lssa model re-weighted only
    at inference (the paper's early claim, not one of its curves);
  - training and validation curves of every run from its metrics.jsonl (copied into
    <folder>/metrics/ so that the report can be rebuilt without the run directories);
  - passkey accuracy by length and by depth; downstream accuracies with standard errors;
    attention statistics, and the attention maps scripts/plot_attention_maps.py drew into maps/;
  - the commit(s), hardware and wall time (run.log's "wall time" lines, one per invocation).
"""
import argparse
import glob
import json
import os
import re
import shutil
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the sibling scripts

import paper_numbers as paper  # noqa: E402
import plot_attention_stats  # noqa: E402
import plot_length  # noqa: E402
import plot_passkey  # noqa: E402
from plot_length import evaluated_as, length_unit, plt, save_figure  # noqa: E402
from table_length import markdown as sweep_table  # noqa: E402

from attention import describe  # noqa: E402


def producer(report):
    """Which script wrote a result JSON (None for anything else)."""
    runs = report.get("runs") if isinstance(report, dict) else None
    if not runs:
        return None
    if "lm_eval" in report:
        return "eval_downstream.py"
    if "accuracy_by_length" in runs[0]:
        return "eval_passkey.py"
    first = runs[0].get("results", [{}])[0]
    if "entropy" in first:
        return "attention_stats.py"
    if "loss" in first:
        return "eval_length.py"
    return None


def load_results(folder):
    """{producer: [(path, report)]} of every result JSON under folder, in path order."""
    found = {}
    for path in sorted(glob.glob(os.path.join(folder, "**", "*.json"), recursive=True)):
        try:
            with open(path) as f:
                report = json.load(f)
        except (OSError, ValueError) as e:
            print(f"warning: {path} is not readable JSON ({e}); left out of the report", file=sys.stderr)
            continue
        kind = producer(report)
        if kind:
            found.setdefault(kind, []).append((path, report))
    return found


def paper_order(label):
    return paper.MAIN.index(label) if label in paper.MAIN else len(paper.MAIN)


def runs_of(found, kind):
    """The runs of every file of one kind, the paper's main types first in its order."""
    runs = [run for _, report in found.get(kind, []) for run in report["runs"]]
    return sorted(runs, key=lambda run: paper_order(evaluated_as(run)))


def fmt(v, digits=3):
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else "–"


def by_multiple(run):
    return {r["length"] / run["train_context"]: r["loss"] for r in run["results"]}


def paper_table(trained):
    """The paper's layout: one row per attention type, 1x-8x (and 16x): ours (paper, ours − paper)."""
    multiples = sorted({m for run in trained for m in by_multiple(run)})
    head = ["attention", "run"] + [f"{m:g}x" for m in multiples] + ["8x / 1x (paper)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in trained:
        label, ours = evaluated_as(run), by_multiple(run)
        theirs = paper.LOSS.get(label, {})
        cells = [label, run["run"]]
        for m in multiples:
            cell = fmt(ours.get(m))
            if m in theirs and m in ours:
                cell += f" ({theirs[m]:.2f}, {ours[m] - theirs[m]:+.2f})"
            cells.append(cell)
        ratio = fmt(ours[8] / ours[1]) if 8 in ours and 1 in ours else "–"
        if 8 in theirs and 1 in theirs:
            ratio += f" ({theirs[8] / theirs[1]:.3f})"
        lines.append("| " + " | ".join(cells + [ratio]) + " |")
    return "\n".join(lines)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def collect_metrics(folder, runs):
    """{run name: metrics records}: from each run directory's metrics.jsonl (copied into
    folder/metrics/), else from an earlier copy there."""
    out = {}
    for run in runs:
        kept = os.path.join(folder, "metrics", run["run"] + ".jsonl")
        source = os.path.join(os.path.dirname(run["checkpoint"]), "metrics.jsonl")
        if os.path.exists(source) and os.path.abspath(source) != os.path.abspath(kept):
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            shutil.copyfile(source, kept)
        if os.path.exists(kept) and run["run"] not in out:
            out[run["run"]] = read_jsonl(kept)
    return out


def training_table(metrics):
    head = ["run", "steps", "last train loss", "last val loss", "median tokens/s", "training time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, records in metrics.items():
        train = [r for r in records if "loss" in r]
        val = [r for r in records if "val_loss" in r]
        seconds, prev = 0.0, 0
        for r in train:   # time_s is the mean step time of the interval since the previous record
            seconds += r.get("time_s", 0.0) * (r["step"] - prev)
            prev = r["step"]
        rate = statistics.median(r["tokens_per_s"] for r in train) if train else None
        lines.append("| " + " | ".join([
            name, str(max((r["step"] for r in records), default=0)), fmt(train[-1]["loss"] if train else None),
            fmt(val[-1]["val_loss"] if val else None), f"{rate:,.0f}" if rate else "–",
            f"{seconds / 60:.1f} min" if seconds else "–"]) + " |")
    return "\n".join(lines)


def plot_curves(metrics, out):
    fig, ax = plt.subplots(figsize=(9, 5))
    for name, records in metrics.items():
        train = [r for r in records if "loss" in r]
        val = [r for r in records if "val_loss" in r]
        line, = ax.plot([r["step"] for r in train], [r["loss"] for r in train], linewidth=0.8, alpha=0.6)
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], marker="o", color=line.get_color(),
                label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (thin: train, markers: validation)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("training curves")
    save_figure(fig, out)


def passkey_tables(runs):
    lengths = sorted({int(L) for run in runs for L in run["accuracy_by_length"]})
    head = ["run", "evaluated as"] + [f"{L} ({L / runs[0]['train_context']:g}x)" for L in lengths]
    lines = ["Accuracy by length (the paper's figure at the same multiple of its 1K context in brackets):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        theirs = paper.PASSKEY.get(evaluated_as(run), {}) if not run.get("overrides") else {}
        cells = [run["run"], evaluated_as(run)]
        for L in lengths:
            acc = run["accuracy_by_length"].get(str(L))
            cell = "–" if acc is None else f"{acc:.0%}"
            m = L / run["train_context"]
            if m in theirs:
                cell += f" ({'non-zero' if theirs[m] is None else format(theirs[m], '.0%')})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    depths = sorted({r["depth"] for run in runs for r in run["results"]})
    head = ["run", "length"] + [f"depth {d:g}" for d in depths]
    lines += ["", "Accuracy by depth of the key (0 = start of the filler, 1 = end):", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        for L in lengths:
            cell = {r["depth"]: r for r in run["results"] if r["length"] == L}
            lines.append("| " + " | ".join([run["run"], str(L)] + [
                f"{cell[d]['correct']}/{cell[d]['trials']}" if d in cell else "–" for d in depths]) + " |")
    return "\n".join(lines)


def scored_by(runs, accuracy):
    """The tasks of the runs that report accuracy (multiple choice), or that do not (generation)."""
    tasks = dict.fromkeys(t for run in runs for t in run["results"])
    return [t for t in tasks if accuracy == any({"acc", "acc_norm"} & set(run["results"].get(t, {})) for run in runs)]


def stand_in_note(runs, tasks):
    """A line naming the local tasks that ran in place of these (eval_downstream.py --stand_in)."""
    stand_ins = {t: local for run in runs for t, local in run.get("stand_ins", {}).items() if t in tasks}
    if not stand_ins:
        return []
    return ["Stand-ins (local tasks run in place of these: a test of the pipeline, not of the model): "
            + ", ".join(f"{t} ran {local}" for t, local in stand_ins.items()) + ".", ""]


def generation_table(runs):
    """Generation tasks (SummScreen's ROUGE, exact match...), every metric lm-eval reports, with
    the paper's figure beside ours where it gives one; a stand-in task says so."""
    tasks = scored_by(runs, accuracy=False)
    if not tasks:
        return ""
    columns = list(dict.fromkeys((t, m) for t in tasks for run in runs for m in run["results"].get(t, {})))
    head = ["run", "evaluated as"] + [f"{t} {m}" for t, m in columns]
    reported = [t for t in tasks if t in paper.GENERATION]
    head += [f"{t} (paper)" for t in reported]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        cells = [run["run"], evaluated_as(run)]
        for t, m in columns:
            v = run["results"].get(t, {}).get(m)
            stderr = "" if v is None or v["stderr"] is None else f" ± {fmt(v['stderr'], 4)}"
            cells.append("–" if v is None else f"{v['value']:.4f}{stderr}")
        cells += [str(paper.GENERATION[t].get(evaluated_as(run), "–")) for t in reported]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += stand_in_note(runs, tasks)
    if reported:
        lines += ["The paper's SummScreen figure is one ROUGE number per type (which ROUGE is not stated); "
                  "lm-eval reports ROUGE-1, ROUGE-2 and ROUGE-L.", ""]
    return "\n".join(lines)


def downstream_table(runs):
    tasks = scored_by(runs, accuracy=True)
    if not tasks:
        return ""
    lines = []
    for metric in ("acc", "acc_norm"):
        head = ["run", "evaluated as"] + tasks
        lines += [f"{metric} ± standard error (n = examples per task):", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for run in runs:
            cells = [run["run"], evaluated_as(run)]
            for t in tasks:
                m = run["results"].get(t, {}).get(metric)
                n = run.get("samples", {}).get(t)
                cells.append("–" if m is None else f"{m['value']:.4f} ± {fmt(m['stderr'], 4)}" + (f" (n={n})" if n else ""))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += stand_in_note(runs, tasks)
    reported = [t for t in tasks if t in paper.DOWNSTREAM]
    if reported:
        lines += ["The paper (percent; whether acc or acc_norm is not stated): " + "; ".join(
            f"{t} " + ", ".join(f"{k} {v}" for k, v in paper.DOWNSTREAM[t].items()) for t in reported) + ".", ""]
    return "\n".join(lines)


def stats_table(runs):
    lengths = sorted({r["length"] for run in runs for r in run["results"]})
    head = ["run", "evaluated as", "statistic"] + [str(L) for L in lengths]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        by_length = {r["length"]: r for r in run["results"]}
        for stat in ("entropy", "sink", "local", "max"):
            lines.append("| " + " | ".join([run["run"], evaluated_as(run), stat] + [
                fmt(by_length[L].get(stat)) if L in by_length else "–" for L in lengths]) + " |")
    return "\n".join(lines)


def wall_times(log_text):
    """The wall time in seconds of each invocation a reproduction's log records: reproduce_*.sh ends
    with "[reproduce_small] wall time 933 s; ...", demo.sh with "[demo] plot: ... wall time: 316 s"."""
    return [int(s) for s in re.findall(r"^\[(?:reproduce_\w+|demo)\] (?:.* )?wall time:? (\d+) s", log_text, flags=re.M)]


def provenance(found, log):
    """Commits, hardware and wall time of a reproduction (log: its run.log, or demo.sh's demo.log)."""
    reports = [report for items in found.values() for _, report in items]
    commits = sorted({r["code"]["commit"][:7] + (" (dirty)" if r["code"].get("dirty") else "") for r in reports})
    machines = sorted({f"{h.get('gpu') or h.get('cpu')} ({h.get('device')}, {h.get('cpu_count')} CPU cores), "
                       f"torch {h.get('torch')}" for h in (r["hardware"] for r in reports)})
    lines = [f"- code: {', '.join(commits)} (the evaluations' commits; runinfo.code_version)",
             f"- hardware of the evaluations: {'; '.join(machines)}"]
    if os.path.exists(log):
        with open(log) as f:
            text = f.read()
        starts = re.findall(r"^\[(reproduce_\w+|demo)\] (\S+) (.*) at (\S+.*)$", text, flags=re.M)
        walls = wall_times(text)
        for script, when, command, commit in starts:
            lines.append(f"- invocation: `{command}` at {commit}, {when}")
        if walls:
            lines.append(f"- wall time: {' + '.join(f'{w / 60:.1f}' for w in walls)} min over {len(walls)} "
                         f"invocation(s) ({os.path.basename(log)}; a re-run skips finished work)")
    return "\n".join(lines)


def build(folder):
    found = load_results(folder)
    name = os.path.basename(os.path.normpath(folder))
    sweeps = runs_of(found, "eval_length.py")
    trained = [run for run in sweeps if not run.get("overrides")]
    reweighted = [run for run in sweeps if run.get("overrides")]
    out = [f"# Reproduction: {name}", "", provenance(found, os.path.join(folder, "run.log")), ""]
    if trained:
        context, unit = trained[0]["train_context"], length_unit(trained)
        out += ["## Validation loss against inference length", "",
                f"Trained at {context} {unit}; the all-position validation loss at each multiple of that context. "
                f"In brackets the paper's loss at the same multiple of its 1K-token context "
                f"(GPT-2 124M on FineWeb-10B; scripts/paper_numbers.py) and ours minus the paper's: at another "
                f"scale or dataset the levels differ, so compare the shapes (the last column)." +
                (" Loss here is in nats per byte, the paper's per GPT-2 token." if unit == "bytes" else ""), "",
                paper_table(trained), ""]
        out += ["Every run, with its last train and validation loss:", "", sweep_table(trained), ""]
        plot_length.plot(trained, os.path.join(folder, "length.png"), f"{name}: loss vs inference length")
        out += ["![loss against length](length.png)", ""]
    if reweighted:
        out += ["## Re-weighting at inference only (the early versions' claim, not one of the paper's curves)", "",
                "v1/v2 of the paper re-weighted a trained lssa model at inference, without training; from v3 on "
                "lssar is trained from scratch. Kept as a check:", "", sweep_table(reweighted), ""]
    metrics = collect_metrics(folder, sweeps)
    out += ["## Training", ""]
    if metrics:
        plot_curves(metrics, os.path.join(folder, "curves.png"))
        out += [training_table(metrics), "", "![training curves](curves.png)", ""]
    else:
        out += ["No metrics.jsonl found (neither the run directories nor a copy in metrics/); the sweep tables "
                "above give each run's last train and validation loss.", ""]
    passkeys = runs_of(found, "eval_passkey.py")
    if passkeys:
        plot_passkey.plot(passkeys, os.path.join(folder, "passkey.png"))
        out += ["## Passkey retrieval", "", passkey_tables(passkeys), "", "![passkey](passkey.png)", ""]
    downstream = runs_of(found, "eval_downstream.py")
    if downstream:
        accuracy = downstream_table(downstream)
        if accuracy:
            out += ["## Zero-shot downstream tasks (lm-eval)", "", accuracy]
        generation = generation_table(downstream)
        if generation:
            out += ["## Generation tasks (lm-eval)", "", generation]
    stats = runs_of(found, "attention_stats.py")
    if stats:
        out += ["## Attention statistics", "", "Mean over layers, heads and sampled rows (scripts/attention_stats.py): "
                "row entropy / ln n, mass on the first key, mass on the last block_size keys, the largest weight.", "",
                stats_table(stats), ""]
        plot_attention_stats.plot(stats, os.path.join(folder, "attention_stats.png"))
        out += ["![attention statistics](attention_stats.png)", ""]
    maps = sorted(glob.glob(os.path.join(folder, "maps", "*.png")))
    if maps:
        out += ["## Attention maps", ""] + [f"![{os.path.basename(m)}](maps/{os.path.basename(m)})" for m in maps] + [""]
    path = os.path.join(folder, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(out))
    print(f"wrote {path}")
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a reproduction's results folder, e.g. results/small-cpu")
    args = p.parse_args(argv)
    if not os.path.isdir(args.folder):
        raise SystemExit(f"error: {args.folder} is not a folder; give a reproduction's results folder")
    build(args.folder)


if __name__ == "__main__":
    main()
