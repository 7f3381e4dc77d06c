"""scripts/docs_tables.py: the results tables of README.md and docs/ match the committed results
(this is the CI check), a changed results file makes --check fail naming the block, a rewrite
mends it, and markers out of place or a missing results file are one-line errors. In-process
on copies of the pages and results: a few seconds."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from helpers import script  # noqa: E402
paper_plan, report = script("paper_plan"), script("report")   # before docs_tables imports them by bare name
import docs_tables  # noqa: E402

HINT = "run python scripts/docs_tables.py"


def check(root, capsys):
    """(exit status of --check, its output lines)."""
    status = docs_tables.main(["--check", "--root", str(root)])
    return status, capsys.readouterr().out.splitlines()


@pytest.fixture
def copy(tmp_path):
    """README.md, docs/ and results/ of the repository, in a folder of their own."""
    shutil.copy(os.path.join(ROOT, "README.md"), tmp_path)
    for folder in ("docs", "results"):
        shutil.copytree(os.path.join(ROOT, folder), tmp_path / folder)
    return tmp_path


def edit_json(path, change):
    report = json.loads(path.read_text())
    change(report)
    path.write_text(json.dumps(report))


def table_row(text, run):
    """The cells of the first table row of `run` in a page."""
    line = next(line for line in text.splitlines() if line.startswith(f"| {run} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_committed_docs_match_the_committed_results(capsys):
    status, lines = check(ROOT, capsys)
    assert status == 0, "\n".join(lines)
    # every block is used on some page: a table dropped from the docs would otherwise go unchecked
    text = "".join(open(p, encoding="utf-8").read() for p in docs_tables.pages(ROOT))
    assert {name for name in docs_tables.BLOCKS if f"<!-- docs_tables:{name} -->" not in text} == set()


def test_a_changed_result_fails_the_check_naming_its_block_and_a_rewrite_mends_it(copy, capsys):
    def lssar(report):
        return next(r for r in report["runs"] if r["attention"] == "lssar")

    def lssar_16x(report):
        run = lssar(report)
        assert run["results"][-1]["length"] == 16 * run["train_context"]
        run["results"][-1]["loss"] = 1.5
    edit_json(copy / "results" / "demo.json", lssar_16x)
    status, lines = check(copy, capsys)
    assert status == 1 and lines == [f"README.md: block demo differs from the results; {HINT}"]
    assert docs_tables.main(["--root", str(copy)]) == 0
    assert capsys.readouterr().out == "wrote README.md\n"
    row = table_row((copy / "README.md").read_text(), "demo-lssar")
    one = lssar(json.loads((copy / "results" / "demo.json").read_text()))["results"][0]["loss"]
    assert row[8] == "1.500" and row[9] == f"{1.5 / one:.3f}"            # 16x, and 16x / 1x
    assert check(copy, capsys) == (0, [])
    # only the block changed: the rest of the page is as committed
    before = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().splitlines()
    after = (copy / "README.md").read_text().splitlines()
    assert len(before) == len(after) and [i for i, (a, b) in enumerate(zip(before, after)) if a != b] == \
        [before.index(next(line for line in before if line.startswith("| demo-lssar |")))]


def test_the_quick_start_takes_each_paths_time_from_its_log(copy, capsys):
    log = copy / "results" / "demo.log"
    text = log.read_text()
    assert re.search(r"wall time: \d+ s", text)
    log.write_text(re.sub(r"wall time: \d+ s", "wall time: 5400 s", text))   # 90 min
    status, lines = check(copy, capsys)
    assert status == 1 and lines == [f"README.md: block {name} differs from the results; {HINT}"
                                     for name in ("quickstart", "demo")]   # the demo's provenance has it too
    docs_tables.main(["--root", str(copy)])
    assert table_row((copy / "README.md").read_text(), "a laptop or any CPU")[2].startswith("90 min (")
    log.write_text(re.sub(r"wall time: \d+ s", "", text))                       # a log without its time says so
    docs_tables.main(["--root", str(copy)])
    assert table_row((copy / "README.md").read_text(), "a laptop or any CPU")[2].startswith("not recorded (")


def test_every_block_of_a_results_folder_sees_a_change_there(copy, capsys):
    """A change to one run of results/small-cpu reaches its sweep table, the paper's layout and the
    summary; a new attention type there (reproduce_small.sh trains more than these) gets its rows."""
    before = {}

    def change(report):
        sigmoid = next(r for r in report["runs"] if r["attention"] == "sigmoid")
        before.update(one=sigmoid["results"][0]["loss"], last=sigmoid["results"][-1]["loss"])
        sigmoid["results"][0]["loss"] += 0.5                  # its 1x
        extra = json.loads(json.dumps(sigmoid))
        extra.update(run="small-cpu-new_type", attention="new_type", trained_attention="new_type")
        report["runs"].append(extra)
    trained = len([r for r in docs_tables.report.runs_of(docs_tables.report.load_results(
        str(copy / "results" / "small-cpu")), "eval_length.py") if not r.get("overrides")])
    edit_json(copy / "results" / "small-cpu" / "baselines.json", change)
    status, lines = check(copy, capsys)
    assert status == 1
    assert sorted(lines) == sorted(f"docs/reproducing.md: block {name} differs from the results; {HINT}"
                                   for name in ("small-cpu", "small-cpu-summary", "paper-vs-small-cpu"))
    docs_tables.main(["--root", str(copy)])
    text = (copy / "docs" / "reproducing.md").read_text()
    assert table_row(text, "small-cpu-new_type")[1] == "new_type"
    sigmoid = table_row(text, "small-cpu-sigmoid")
    one = before["one"] + 0.5
    assert sigmoid[4] == f"{one:.3f}" and sigmoid[9] == f"{before['last'] / one:.3f}"   # 1x, and 16x / 1x
    assert f"At 1× the {trained + 1} trained models" in text


def test_the_cost_block_is_what_the_dry_run_prints():
    """paper_plan's estimate as docs/reproducing.md holds it, against reproduce_paper.sh's own dry
    run (its run list, its config) costed with the committed H200 figures."""
    env = {**os.environ, "DRY_RUN": "1", "GPU": "NVIDIA-H200"}
    out = subprocess.run(["bash", "scripts/reproduce_paper.sh", "8"], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("# cost estimate"))
    end = next(i for i, line in enumerate(out) if line.startswith("# disk:"))
    page = open(os.path.join(ROOT, "docs", "reproducing.md"), encoding="utf-8").read()
    block = re.search(r"<!-- docs_tables:paper-cost -->\n\n```\n(.*?)\n```", page, re.S).group(1)
    assert block.splitlines() == out[start:end + 1]


@pytest.mark.parametrize("text, error", [
    ("<!-- docs_tables:nonesuch -->\n<!-- /docs_tables -->\n", "README.md:1: unknown block 'nonesuch'"),
    ("intro\n<!-- docs_tables:demo -->\n| old |\n", "README.md: block demo is not closed"),
    ("<!-- /docs_tables -->\n", "README.md:1: <!-- /docs_tables --> without a block before it"),
    ("<!-- docs_tables:demo -->\n<!-- docs_tables:small-gpu -->\n<!-- /docs_tables -->\n",
     "README.md:2: block small-gpu starts inside block demo"),
])
def test_markers_out_of_place_are_one_line_errors(copy, text, error):
    (copy / "README.md").write_text(text)
    with pytest.raises(SystemExit) as e:
        docs_tables.main(["--check", "--root", str(copy)])
    assert str(e.value).startswith(f"docs_tables: {error}") and "\n" not in str(e.value)


def test_a_missing_results_file_is_named_and_nothing_is_written(copy):
    edit_json(copy / "results" / "demo.json", lambda r: r["runs"][0]["results"][0].update(loss=9.0))
    os.remove(copy / "results" / "kernel_resources" / "sm90.json")
    readme = (copy / "README.md").read_text()
    with pytest.raises(SystemExit, match=r"^docs_tables: results/kernel_resources/sm90.json is missing "
                                         r"\(block sm90-spills is written from it\)"):
        docs_tables.main(["--root", str(copy)])
    assert (copy / "README.md").read_text() == readme     # the demo block, rendered first, was not written either


def test_a_results_file_that_is_not_json_is_named(copy):
    (copy / "results" / "demo_downstream.json").write_text("{")
    with pytest.raises(SystemExit, match=r"^docs_tables: results/demo_downstream.json is not valid JSON .*"
                                         r"block demo-downstream"):
        docs_tables.main(["--check", "--root", str(copy)])


def test_the_mutation_scores_follow_the_mutation_report(copy, capsys):
    report = copy / "results" / "mutation.md"
    lines = report.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("| checkpoint.py |"))
    cells = lines[i].split("|")
    cells[7], cells[10] = " **12.5 %** ", " 4321 s "     # the score, and the seconds of its runs
    lines[i] = "|".join(cells)
    report.write_text("\n".join(lines) + "\n")
    assert check(copy, capsys)[1] == [f"docs/testing.md: block mutation-scores differs from the results; {HINT}"]
    docs_tables.main(["--root", str(copy)])
    row = table_row((copy / "docs" / "testing.md").read_text(), "checkpoint.py")
    assert row[4] == "**12.5 %**" and row[6] == "4,321 s"
    report.write_text("no table here\n")
    with pytest.raises(docs_tables.Problem, match="^docs_tables: results/mutation.md has no table of modules"):
        docs_tables.main(["--check", "--root", str(copy)])
