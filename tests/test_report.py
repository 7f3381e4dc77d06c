"""scripts/report.py in-process: the committed reports (results/small-cpu, results/small) rebuilt word
for word from their folders, and each table the committed folders lack (passkey, downstream,
generation, statistics) written from a small hand-made result and checked cell by cell. The plots
are recorded instead of drawn (matplotlib takes seconds), except in the test of the training curves."""
import json
import os
import shutil
import warnings

import pytest

from helpers import script

report = script("report")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def drawn(monkeypatch):
    """[(plot, runs or metrics, path, title)] of every plot report.build asks for, none of them drawn."""
    calls = []
    for name, module in (("length", report.plot_length), ("passkey", report.plot_passkey),
                         ("attention_stats", report.plot_attention_stats)):
        monkeypatch.setattr(module, "plot", lambda runs, out, title=None, _name=name: calls.append((_name, runs, out, title)))
    monkeypatch.setattr(report, "plot_curves", lambda metrics, out: calls.append(("curves", metrics, out, None)))
    return calls


def run(name, attention="softmax", p=15.0, **extra):
    return {"run": name, "attention": attention, "trained_attention": attention, "reweight_p": p, "overrides": {},
            **extra}


def rows(*cells):
    return ["| " + " | ".join(c) + " |" for c in cells]


@pytest.mark.parametrize("name", ["small-cpu", "small"])
def test_the_committed_reports_are_rebuilt_word_for_word(name, tmp_path, drawn, capsys):
    folder = tmp_path / name
    shutil.copytree(os.path.join(ROOT, "results", name), folder)
    os.remove(folder / "report.md")
    report.main([str(folder) + "/"])     # named with a trailing slash: the report is still named after the folder
    with open(os.path.join(ROOT, "results", name, "report.md")) as f:
        assert (folder / "report.md").read_text() == f.read()
    assert capsys.readouterr().out == f"wrote {folder / 'report.md'}\n"
    trained = [r for r in report.runs_of(report.load_results(str(folder)), "eval_length.py") if not r.get("overrides")]
    assert [(plot, out, title) for plot, _, out, title in drawn] == [
        ("length", str(folder / "length.png"), f"{name}: loss vs inference length")] + (
        [("curves", str(folder / "curves.png"), None)] if name == "small-cpu" else [])
    assert drawn[0][1] == trained and len(trained) == {"small-cpu": 11, "small": 3}[name]
    if name == "small-cpu":   # the metrics kept in the folder (the run directories are gone)
        assert sorted(drawn[1][1]) == sorted(r["run"] for r in trained) and len(drawn[1][1]["small-cpu-softmax"]) > 10


def test_a_folder_that_is_not_one_is_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match=f"^error: {tmp_path / 'nope'} is not a folder; give a reproduction's "
                                         "results folder$"):
        report.main([str(tmp_path / "nope")])


def test_results_are_told_apart_by_content_and_unreadable_ones_left_out(tmp_path, capsys):
    assert [report.producer(r) for r in (
        [1], {}, {"runs": []}, {"runs": [{}]}, {"lm_eval": {}, "runs": [{"results": {}}]},
        {"runs": [{"accuracy_by_length": {}}]}, {"runs": [{"results": [{"entropy": 0.5, "loss": 1.0}]}]},
        {"runs": [{"results": [{"loss": 1.0}]}]}, {"runs": [{"results": [{"accuracy": 1.0}]}]})] == [
        None, None, None, None, "eval_downstream.py", "eval_passkey.py", "attention_stats.py", "eval_length.py", None]
    sweep = {"runs": [{"results": [{"loss": 1.0}]}]}
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "sweep.json").write_text(json.dumps(sweep))
    (tmp_path / "a.json").write_text(json.dumps(sweep))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "c.json").write_text(json.dumps(sweep))          # after the broken one: still read
    (tmp_path / "other.json").write_text(json.dumps({"runs": [{"results": [{"x": 1}]}]}))
    (tmp_path / "sweep.csv").write_text("not json")
    found = report.load_results(str(tmp_path))
    assert found == {"eval_length.py": [(str(tmp_path / "a.json"), sweep), (str(tmp_path / "b" / "sweep.json"), sweep),
                                        (str(tmp_path / "c.json"), sweep)]}
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {tmp_path / 'broken.json'} is not readable JSON (") and err.count("\n") == 1
    assert err.endswith("); left out of the report\n")


def test_runs_come_in_the_papers_order_the_others_after_in_file_order():
    found = {"eval_length.py": [("a", {"runs": [run("x", "relu_l1"), run("y", "lssar", 15.0)]}),
                                ("b", {"runs": [run("z", "softmax"), run("w", "ssmax"), run("v", "lssar", 3.0)]})],
             "eval_passkey.py": [("c", {"runs": [run("u")]})]}
    assert [r["run"] for r in report.runs_of(found, "eval_length.py")] == ["z", "v", "y", "x", "w"]
    assert report.runs_of(found, "attention_stats.py") == []
    assert (report.paper_order("softmax"), report.paper_order("lssar p=15"), report.paper_order("ssmax")) == (0, 5, 6)
    assert (report.fmt(1.23456), report.fmt(2), report.fmt(1.23456, 1), report.fmt(None), report.fmt("1")) == (
        "1.235", "2.000", "1.2", "–", "–")


def test_the_paper_table_puts_ours_beside_the_papers_at_each_multiple(monkeypatch):
    softmax = run("s", train_context=100, results=[{"length": L, "loss": v} for L, v in ((100, 3.0), (200, 4.0),
                                                                                            (800, 6.0))])
    lssar = run("l", "lssar", train_context=100, results=[{"length": 100, "loss": 3.5}, {"length": 300, "loss": 3.6}])
    assert report.by_multiple(lssar) == {1.0: 3.5, 3.0: 3.6}
    assert report.paper_table([softmax, lssar]).splitlines() == rows(
        ["attention", "run", "1x", "2x", "3x", "8x", "8x / 1x (paper)"]) + ["|---|---|---|---|---|---|---|"] + rows(
        ["softmax", "s", "3.000 (3.19, -0.19)", "4.000 (4.17, -0.17)", "–", "6.000 (6.28, -0.28)", "2.000 (1.969)"],
        ["lssar p=15", "l", "3.500 (3.19, +0.31)", "–", "3.600", "–", "– (1.041)"])
    # the paper's ratio needs its 1x and 8x only
    monkeypatch.setattr(report.paper, "LOSS", {"softmax": {1: 3.0, 8: 6.0}})
    assert report.paper_table([softmax]).splitlines()[2].endswith(" | 2.000 (2.000) |")
    ssmax = run("m", "ssmax", train_context=100, results=[{"length": 100, "loss": 2.0}, {"length": 800, "loss": 3.0}])
    assert report.paper_table([ssmax]).splitlines()[2] == "| ssmax | m | 2.000 | 3.000 | 1.500 |"


def test_metrics_are_copied_from_the_run_directory_and_read_from_the_copy_after(tmp_path):
    folder, out = tmp_path / "results", tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "val_loss": 1.5}\n')
    runs = [run("a", checkpoint=str(out / "a" / "ckpt_000002.pt")), run("b", checkpoint=str(out / "b" / "ckpt.pt")),
            run("a", checkpoint=str(out / "gone" / "ckpt.pt"))]
    expected = {"a": [{"step": 1, "loss": 2.0}, {"step": 2, "val_loss": 1.5}]}
    assert report.collect_metrics(str(folder), runs) == expected       # b has no metrics anywhere: left out
    assert (folder / "metrics" / "a.jsonl").read_text() == (out / "a" / "metrics.jsonl").read_text()
    (out / "a" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')    # the run went on: copied again
    assert report.collect_metrics(str(folder), runs) == {"a": [{"step": 1, "loss": 2.0}]}
    (out / "a" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n\n{"step": 2, "val_loss": 1.5}\n')
    report.collect_metrics(str(folder), runs)
    shutil.rmtree(out)                 # the run directories gone: the copy is read
    assert report.collect_metrics(str(folder), runs) == expected
    # a run directory that is the folder's metrics/ itself (a run named "metrics"), the folder named another
    # way: read in place, not copied onto itself
    (folder / "metrics" / "metrics.jsonl").write_text('{"step": 3, "loss": 1.0}\n')
    (folder / "m2").mkdir()
    assert report.collect_metrics(str(folder / "m2" / ".."), [run("metrics", checkpoint=str(folder / "metrics" / "x.pt"))]) \
        == {"metrics": [{"step": 3, "loss": 1.0}]}


def test_the_training_table_sums_each_intervals_time_and_takes_the_median_rate():
    metrics = {"a": [{"step": 10, "loss": 4.0, "time_s": 6.0, "tokens_per_s": 1000},
                     {"step": 20, "val_loss": 3.5},
                     {"step": 30, "loss": 3.0, "time_s": 3.0, "tokens_per_s": 3000},
                     {"step": 40, "loss": 2.0, "tokens_per_s": 2500},
                     {"step": 45, "val_loss": 3.25}],
               "b": [{"step": 5, "val_loss": 1.25}], "c": []}
    # a: 10 steps of 6 s and 20 of 3 s (the interval since the previous training record), the last 10 untimed
    assert report.training_table(metrics).splitlines() == rows(
        ["run", "steps", "last train loss", "last val loss", "median tokens/s", "training time"]) + [
        "|---|---|---|---|---|---|"] + rows(["a", "45", "2.000", "3.250", "2,500", "2.0 min"],
                                            ["b", "5", "–", "1.250", "–", "–"], ["c", "0", "–", "–", "–", "–"])


def test_the_training_curves_plot_train_thin_and_validation_with_markers(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(report, "save_figure", lambda fig, out: saved.append((fig, out)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # matplotlib's warnings too (a grid asked off with line properties...)
        report.plot_curves({"a": [{"step": 1, "loss": 3.0}, {"step": 2, "val_loss": 2.5}, {"step": 3, "loss": 2.0}],
                            "b": [{"step": 1, "loss": 4.0}]}, str(tmp_path / "curves.png"))
    (fig, out), = saved
    assert out == str(tmp_path / "curves.png") and tuple(fig.get_size_inches()) == (9, 5)
    ax, = fig.axes
    lines = ax.get_lines()
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in lines] == [
        ([1, 3], [3.0, 2.0]), ([2], [2.5]), ([1], [4.0]), ([], [])]
    for train, val in (lines[:2], lines[2:]):
        assert (train.get_linewidth(), train.get_alpha(), train.get_marker()) == (0.8, 0.6, "None")
        assert val.get_marker() == "o" and val.get_color() == train.get_color()
    assert lines[0].get_color() != lines[2].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert ax.get_legend().get_texts()[0].get_fontsize() == 8
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("step", "loss (thin: train, markers: validation)",
                                                                 "training curves")
    grid = ax.xaxis.get_gridlines()[0]
    assert grid.get_visible() and grid.get_alpha() == 0.3 and ax.yaxis.get_gridlines()[0].get_visible()
    report.plt.close(fig)


def passkey_runs():
    a = run("a", train_context=1000, accuracy_by_length={"1000": 0.5, "1500": 0.25, "4000": 0.0},
            results=[{"length": 1000, "depth": 0.0, "correct": 1, "trials": 2},
                     {"length": 1000, "depth": 1.0, "correct": 0, "trials": 2},
                     {"length": 1500, "depth": 0.5, "correct": 1, "trials": 4}])
    b = run("b", "lssar", train_context=1000, accuracy_by_length={"1000": 1.0, "8000": 0.1},
            results=[{"length": 1000, "depth": 0.0, "correct": 2, "trials": 2},
                     {"length": 8000, "depth": 1.0, "correct": 1, "trials": 10}])
    c = run("c", "lssar", 3.0, train_context=1000, accuracy_by_length={"1000": 0.75}, results=[],
            overrides={"reweight_p": 3.0}, trained_attention="lssar")
    return [a, b, c]


def test_passkey_tables_by_length_beside_the_paper_and_by_depth():
    dash4 = ["–"] * 3
    assert report.passkey_tables(passkey_runs()).splitlines() == [
        "Accuracy by length (the paper's figure at the same multiple of its 1K context in brackets):", ""] + rows(
        ["run", "evaluated as", "1000 (1x)", "1500 (1.5x)", "4000 (4x)", "8000 (8x)"]) + ["|---|---|---|---|---|---|"] \
        + rows(["a", "softmax", "50% (64%)", "25% (0%)", "0% (0%)", "– (0%)"],
               ["b", "lssar p=15", "100% (86%)", "– (45%)", "– (20%)", "10% (non-zero)"],
               ["c", "lssar p=3 (trained lssar)", "75%", "–", "–", "–"]) + [
        "", "Accuracy by depth of the key (0 = start of the filler, 1 = end):", ""] + rows(
        ["run", "length", "depth 0", "depth 0.5", "depth 1"]) + ["|---|---|---|---|---|"] + rows(
        ["a", "1000", "1/2", "–", "0/2"], ["a", "1500", "–", "1/4", "–"], ["a", "4000"] + dash4, ["a", "8000"] + dash4,
        ["b", "1000", "2/2", "–", "–"], ["b", "1500"] + dash4, ["b", "4000"] + dash4, ["b", "8000", "–", "–", "1/10"],
        ["c", "1000"] + dash4, ["c", "1500"] + dash4, ["c", "4000"] + dash4, ["c", "8000"] + dash4)


def test_passkey_lengths_are_multiples_of_the_first_runs_context_and_other_types_get_no_paper_figure():
    runs = [run("x", "relu", train_context=1000, accuracy_by_length={"2000": 1.0}, results=[]),
            run("y", train_context=2000, accuracy_by_length={}, results=[])]
    assert report.passkey_tables(runs).splitlines()[2:5] == rows(["run", "evaluated as", "2000 (2x)"]) + [
        "|---|---|---|", "| x | relu | 100% |"]


def lm_eval_runs():
    r1 = run("r1", results={"arc_easy": {"acc": {"value": 0.5, "stderr": 0.01}, "acc_norm": {"value": 0.55, "stderr": None}},
                            "tiny_gen": {"exact_match": {"value": 0.25, "stderr": 0.05}},
                            "scrolls_summscreenfd": {"rouge1": {"value": 0.1, "stderr": None}}},
             samples={"arc_easy": 100}, stand_ins={"scrolls_summscreenfd": "tiny_gen2"})
    r2 = run("r2", "lssar", results={"arc_easy": {"acc": {"value": 0.6, "stderr": 0.02}},
                                     "mmlu": {"acc_norm": {"value": 0.3, "stderr": 0.04}}},
             samples={}, stand_ins={"mmlu": "tiny_mc"})
    r3 = run("r3", "relu", results={"mmlu": {"acc": {"value": 0.25, "stderr": 0.04}}})
    return [r1, r2, r3]


STAND_INS = "Stand-ins (local tasks run in place of these: a test of the pipeline, not of the model): "


def test_downstream_table_gives_acc_and_acc_norm_with_standard_errors_and_the_papers_figures():
    runs = lm_eval_runs()
    assert report.scored_by(runs, accuracy=True) == ["arc_easy", "mmlu"]
    assert report.scored_by(runs, accuracy=False) == ["tiny_gen", "scrolls_summscreenfd"]
    head = rows(["run", "evaluated as", "arc_easy", "mmlu"]) + ["|---|---|---|---|"]
    assert report.downstream_table(runs).split("\n") == [
        "acc ± standard error (n = examples per task):", ""] + head + rows(
        ["r1", "softmax", "0.5000 ± 0.0100 (n=100)", "–"], ["r2", "lssar p=15", "0.6000 ± 0.0200", "–"],
        ["r3", "relu", "–", "0.2500 ± 0.0400"]) + ["", "acc_norm ± standard error (n = examples per task):", ""] + head \
        + rows(["r1", "softmax", "0.5500 ± – (n=100)", "–"], ["r2", "lssar p=15", "–", "0.3000 ± 0.0400"],
               ["r3", "relu", "–", "–"]) + [
        "", STAND_INS + "mmlu ran tiny_mc.", "",
        "The paper (percent; whether acc or acc_norm is not stated): arc_easy softmax 39.77, lssar p=15 40.57.", ""]
    # neither a stand-in nor a task of the paper's: the table alone
    mine = [run("r", results={"mmlu": {"acc": {"value": 0.25, "stderr": 0.04}}}, samples={"mmlu": 7})]
    head = rows(["run", "evaluated as", "mmlu"]) + ["|---|---|---|"]
    assert report.downstream_table(mine).split("\n") == ["acc ± standard error (n = examples per task):", ""] + head + [
        "| r | softmax | 0.2500 ± 0.0400 (n=7) |", "", "acc_norm ± standard error (n = examples per task):", ""] + head + [
        "| r | softmax | – |", ""]
    assert report.downstream_table([run("g", results={"tiny_gen": {"exact_match": {"value": 1.0, "stderr": 0.0}}})]) == ""
    # acc_norm alone is accuracy too; two of the paper's tasks, two stand-ins
    acc = {"acc_norm": {"value": 0.5, "stderr": 0.1}}
    two = [run("t", results={"arc_easy": acc, "piqa": acc, "mmlu": acc}, stand_ins={"arc_easy": "a", "piqa": "b"})]
    assert report.scored_by(two, accuracy=True) == ["arc_easy", "piqa", "mmlu"]
    assert report.downstream_table(two).split("\n")[-4:] == [
        STAND_INS + "arc_easy ran a, piqa ran b.", "",
        "The paper (percent; whether acc or acc_norm is not stated): arc_easy softmax 39.77, lssar p=15 40.57; "
        "piqa softmax 64.09, lssar p=15 65.34.", ""]


def test_generation_table_gives_every_metric_and_the_papers_summscreen():
    assert report.generation_table(lm_eval_runs()).split("\n") == rows(
        ["run", "evaluated as", "tiny_gen exact_match", "scrolls_summscreenfd rouge1", "scrolls_summscreenfd (paper)"]) \
        + ["|---|---|---|---|---|"] + rows(["r1", "softmax", "0.2500 ± 0.0500", "0.1000", "1.68"],
                                          ["r2", "lssar p=15", "–", "–", "6.31"], ["r3", "relu", "–", "–", "–"]) + [
        "", STAND_INS + "scrolls_summscreenfd ran tiny_gen2.", "",
        "The paper's SummScreen figure is one ROUGE number per type (which ROUGE is not stated); lm-eval reports "
        "ROUGE-1, ROUGE-2 and ROUGE-L.", ""]
    mine = [run("r", results={"tiny_gen": {"exact_match": {"value": 0.5, "stderr": 0.1}}})]
    assert report.generation_table(mine).split("\n") == rows(["run", "evaluated as", "tiny_gen exact_match"]) + [
        "|---|---|---|"] + rows(["r", "softmax", "0.5000 ± 0.1000"]) + [""]
    assert report.generation_table([run("m", results={"mmlu": {"acc": {"value": 0.25, "stderr": 0.04}}})]) == ""
    assert report.stand_in_note([run("r", stand_ins={"mmlu": "tiny_mc"})], ["arc_easy"]) == []


def test_stats_table_gives_each_statistic_at_each_length():
    runs = [run("a", results=[{"length": 128, "entropy": 0.4, "sink": 0.1, "local": 0.9, "max": None},
                              {"length": 64, "entropy": 0.5, "sink": 0.25, "local": 1.0, "max": 0.75}]),
            run("b", "relu", results=[{"length": 128, "entropy": 0.3, "sink": 0.2, "local": 0.8, "max": 0.6}])]
    assert report.stats_table(runs).splitlines() == rows(["run", "evaluated as", "statistic", "64", "128"]) + [
        "|---|---|---|---|---|"] + rows(
        ["a", "softmax", "entropy", "0.500", "0.400"], ["a", "softmax", "sink", "0.250", "0.100"],
        ["a", "softmax", "local", "1.000", "0.900"], ["a", "softmax", "max", "0.750", "–"],
        ["b", "relu", "entropy", "–", "0.300"], ["b", "relu", "sink", "–", "0.200"],
        ["b", "relu", "local", "–", "0.800"], ["b", "relu", "max", "–", "0.600"])


LOG = """\
[reproduce_paper] 2026-01-02T03:04:05Z bash scripts/reproduce_paper.sh 8 at abc1234 (dirty)
+ python train.py at 5
[reproduce_paper] wall time 930 s; results in results/paper_124m/
 [reproduce_paper] wall time 1 s
[other] wall time 2 s
[reproduce_paper] 2026-01-03T00:00:00Z bash scripts/reproduce_paper.sh 8 at def5678
[reproduce_paper] wall time: 318 s
[demo] plot: results/demo.png; wall time: 60 s
[demo] wall time 12.5 s
"""


def test_wall_times_are_read_from_each_invocations_last_line():
    assert report.wall_times(LOG) == [930, 318, 60]


def test_provenance_names_commits_machines_invocations_and_wall_time(tmp_path):
    def result(commit, dirty=False, **hardware):
        return {"code": {"commit": commit, "dirty": dirty}, "hardware": hardware}
    found = {"eval_length.py": [("x", result("bbbbbbb999", gpu="NVIDIA H200", device="cuda", cpu_count=16, torch="2.9"))],
             "eval_passkey.py": [("y", result("aaaaaaa111", True, cpu="AMD EPYC", device="cpu", cpu_count=2,
                                              torch="2.8")),
                                 ("z", result("bbbbbbb000", gpu=None, cpu="AMD EPYC", device="cpu", cpu_count=2,
                                              torch="2.8"))]}
    head = ["- code: aaaaaaa (dirty), bbbbbbb (the evaluations' commits; runinfo.code_version)",
            "- hardware of the evaluations: AMD EPYC (cpu, 2 CPU cores), torch 2.8; NVIDIA H200 (cuda, 16 CPU cores), "
            "torch 2.9"]
    assert report.provenance(found, str(tmp_path / "run.log")).split("\n") == head      # no log
    (tmp_path / "run.log").write_text(LOG)
    assert report.provenance(found, str(tmp_path / "run.log")).split("\n") == head + [
        "- invocation: `bash scripts/reproduce_paper.sh 8` at abc1234 (dirty), 2026-01-02T03:04:05Z",
        "- invocation: `bash scripts/reproduce_paper.sh 8` at def5678, 2026-01-03T00:00:00Z",
        "- wall time: 15.5 + 5.3 + 1.0 min over 3 invocation(s) (run.log; a re-run skips finished work)"]
    (tmp_path / "demo.log").write_text("[demo] 2026-01-01T00:00:00Z bash scripts/demo.sh at 0123456\n")
    assert report.provenance(found, str(tmp_path / "demo.log")).split("\n")[2:] == [
        "- invocation: `bash scripts/demo.sh` at 0123456, 2026-01-01T00:00:00Z"]


def test_a_folder_of_every_evaluation_gets_each_section_and_plot(tmp_path, drawn):
    """No sweep, no metrics: passkey, downstream (accuracy and generation), statistics and maps."""
    meta = {"code": {"commit": "0123456789"}, "hardware": {"cpu": "c", "device": "cpu", "cpu_count": 1, "torch": "t"}}
    (tmp_path / "passkey").mkdir()
    (tmp_path / "passkey" / "a.json").write_text(json.dumps({**meta, "runs": passkey_runs()}))
    (tmp_path / "downstream.json").write_text(json.dumps({**meta, "lm_eval": "0.4", "runs": lm_eval_runs()}))
    shutil.copy(os.path.join(ROOT, "results", "attention_stats.json"), tmp_path / "stats.json")
    (tmp_path / "maps").mkdir()
    for png in ("softmax.png", "lssar.png"):
        (tmp_path / "maps" / png).write_bytes(b"png")
    report.build(str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert [line for line in text.splitlines() if line.startswith("#")] == [
        f"# Reproduction: {tmp_path.name}", "## Training", "## Passkey retrieval", "## Zero-shot downstream tasks (lm-eval)",
        "## Generation tasks (lm-eval)", "## Attention statistics", "## Attention maps"]
    with open(os.path.join(ROOT, "results", "attention_stats.json")) as f:
        stats = json.load(f)["runs"]
    r1, r2, r3 = lm_eval_runs()    # in the paper's order: softmax, relu, lssar p=15
    stats = [r for a in ("softmax", "lssa", "lssar") for r in stats if r["attention"] == a]
    assert text[text.index("## Training"):] == (
        "## Training\n\nNo metrics.jsonl found (neither the run directories nor a copy in metrics/); the sweep tables "
        "above give each run's last train and validation loss.\n\n"
        "## Passkey retrieval\n\n" + report.passkey_tables(passkey_runs()) + "\n\n![passkey](passkey.png)\n\n"
        "## Zero-shot downstream tasks (lm-eval)\n\n" + report.downstream_table([r1, r3, r2]) + "\n"
        "## Generation tasks (lm-eval)\n\n" + report.generation_table([r1, r3, r2]) + "\n"
        "## Attention statistics\n\nMean over layers, heads and sampled rows (scripts/attention_stats.py): row entropy / "
        "ln n, mass on the first key, mass on the last block_size keys, the largest weight.\n\n" + report.stats_table(stats)
        + "\n\n![attention statistics](attention_stats.png)\n\n"
        "## Attention maps\n\n![lssar.png](maps/lssar.png)\n![softmax.png](maps/softmax.png)\n")
    assert [(plot, len(runs), out, title) for plot, runs, out, title in drawn] == [
        ("passkey", 3, str(tmp_path / "passkey.png"), None),
        ("attention_stats", len(stats), str(tmp_path / "attention_stats.png"), None)]


def test_one_trained_run_is_a_loss_section_of_its_own(tmp_path, drawn):
    with open(os.path.join(ROOT, "results", "small", "sweep.json")) as f:
        sweep = json.load(f)
    sweep["runs"] = sweep["runs"][:1]
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    report.build(str(tmp_path))
    text = (tmp_path / "report.md").read_text()
    assert "\nTrained at 256 tokens; the all-position validation loss" in text and "nats per byte" not in text
    assert "\n| softmax | small-softmax | " in text and "\n| small-softmax | softmax | " in text   # both tables
