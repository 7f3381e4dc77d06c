"""runinfo.py: the code version recorded with every run and result."""
import subprocess

import runinfo


def test_code_version_dirty_means_code_not_results(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "model.py").write_text("x = 1\n")
    (tmp_path / "results" / "sweep.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    monkeypatch.setattr(runinfo, "REPO_ROOT", str(tmp_path))
    clean = runinfo.code_version()
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (tmp_path / "results" / "sweep.json").write_text('{"new": 1}\n')  # a script rewriting its own output
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert runinfo.code_version()["dirty"] is False
    (tmp_path / "model.py").write_text("x = 2\n")
    assert runinfo.code_version()["dirty"] is True


def test_keep_freed_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("KEEP_FREED_MEMORY", "0")  # for a machine short of memory, and for bench_memory.py
    assert runinfo.keep_freed_memory() is False


def test_write_json_leaves_no_file_when_interrupted(tmp_path):
    # reproduce_paper.sh skips an evaluation whose result file exists: a half-written one must not
    path = tmp_path / "sweep" / "lssar.json"
    try:
        runinfo.write_json({"runs": [{"loss": 1.0}, object()]}, str(path))   # fails halfway through
    except TypeError:
        pass
    assert list(tmp_path.rglob("*")) == [tmp_path / "sweep"]
    runinfo.write_json({"runs": []}, str(path))
    assert path.read_text() == '{\n  "runs": []\n}'
