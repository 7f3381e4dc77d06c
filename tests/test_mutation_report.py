"""tools/mutation_report.py keeps every mutation run's verdicts in a committed file, with a hash of each
tested function's code: what it records, when a verdict stops counting, and how a mutant is judged."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import mutation_report as R  # noqa: E402

CODE = '''
def double(x):
    return 2 * x


class Box:
    def size(self):
        return 3
'''


def a_run(tmp_path, name, code, results):
    """A scratch run directory as tools/mutation.sh leaves it: the module it mutated and mutmut's results."""
    run = tmp_path / name
    run.mkdir()
    (run / "m.py").write_text(code)
    (run / "results.txt").write_text("".join(f"    {n}: {v}\n" for n, v in results.items()))
    return run


def test_a_run_is_recorded_and_read_back_with_only_what_was_not_killed_listed(tmp_path):
    store = tmp_path / "verdicts.txt"
    run = a_run(tmp_path, "run", CODE, {"m.x_double__mutmut_1": "killed", "m.x_double__mutmut_2": "survived",
                                        "m.xǁBoxǁsize__mutmut_1": "timeout", "m.xǁBoxǁsize__mutmut_2": "not checked"})
    assert R.record(run, "m.py", "2026-12-06", "abc1234", 12, "all", path=store) == 2
    text = store.read_text()
    assert "m.x_double__mutmut_1" not in text and "m.x_double__mutmut_2: survived" in text
    (tmp_path / "m.py").write_text(CODE)
    names = ["m.x_double__mutmut_1", "m.x_double__mutmut_2", "m.xǁBoxǁsize__mutmut_1", "m.xǁBoxǁsize__mutmut_2"]
    status, runs = R.verdicts("m.py", names, R.load_store(store), root=tmp_path)
    assert status == {"m.x_double__mutmut_1": "killed", "m.x_double__mutmut_2": "survived",
                      "m.xǁBoxǁsize__mutmut_1": "timeout", "m.xǁBoxǁsize__mutmut_2": "not checked"}
    assert R.judge("m.xǁBoxǁsize__mutmut_2", status["m.xǁBoxǁsize__mutmut_2"], {})[0] == "not run"
    assert runs == {"2026-12-06 abc1234 12 s: all": 4}


def test_a_function_changed_since_its_run_counts_as_not_run_and_a_comment_does_not_change_it(tmp_path):
    store = tmp_path / "verdicts.txt"
    run = a_run(tmp_path, "run", CODE, {"m.x_double__mutmut_1": "killed", "m.xǁBoxǁsize__mutmut_1": "killed"})
    R.record(run, "m.py", "2026-12-06", "abc1234", 12, "all", path=store)
    names = ["m.x_double__mutmut_1", "m.xǁBoxǁsize__mutmut_1"]
    (tmp_path / "m.py").write_text(CODE.replace("return 3", "return 4") + "\n# a comment\n")
    status, _ = R.verdicts("m.py", names, R.load_store(store), root=tmp_path)
    assert status == {"m.x_double__mutmut_1": "killed", "m.xǁBoxǁsize__mutmut_1": "not run"}


def test_a_rerun_of_some_mutants_keeps_the_others_unless_the_code_changed(tmp_path):
    store = tmp_path / "verdicts.txt"
    first = {"m.x_double__mutmut_1": "survived", "m.x_double__mutmut_2": "survived"}
    R.record(a_run(tmp_path, "first", CODE, first), "m.py", "2026-12-05", "abc1234", 10, "all", path=store)
    again = {"m.x_double__mutmut_1": "killed", "m.x_double__mutmut_2": "not checked"}
    R.record(a_run(tmp_path, "again", CODE, again), "m.py", "2026-12-06", "abc1234", 3, "m.x_double__mutmut_1",
             path=store)
    assert R.load_store(store)["m.py"]["status"] == {"m.x_double__mutmut_2": "survived"}
    assert R.load_store(store)["m.py"]["functions"]["double"][1] == [0, 1]   # tested by both runs
    (tmp_path / "m.py").write_text(CODE)
    _, runs = R.verdicts("m.py", ["m.x_double__mutmut_1", "m.x_double__mutmut_2"], R.load_store(store), root=tmp_path)
    assert runs == {"2026-12-05 abc1234 10 s: all": 2, "2026-12-06 abc1234 3 s: m.x_double__mutmut_1": 0}
    changed = CODE.replace("2 * x", "x + x")
    R.record(a_run(tmp_path, "changed", changed, again), "m.py", "2026-12-07", "def5678", 3, "m.x_double__mutmut_1",
             path=store)
    entry = R.load_store(store)["m.py"]
    assert entry["status"] == {"m.x_double__mutmut_2": "not checked"}   # its old verdict judged other code
    assert entry["runs"] == ["2026-12-07 def5678 3 s: m.x_double__mutmut_1"]   # runs giving no verdict are dropped
    assert entry["functions"]["double"][1] == [0]
    (tmp_path / "m.py").write_text(changed)
    status, _ = R.verdicts("m.py", ["m.x_double__mutmut_1", "m.x_double__mutmut_2"], R.load_store(store), root=tmp_path)
    assert R.judge("m.x_double__mutmut_2", status["m.x_double__mutmut_2"], {})[0] == "not run"


def test_a_rerun_of_every_mutant_of_a_function_is_then_its_only_source(tmp_path):
    """A cold rerun replaces what an older run said: the older run no longer gives any verdict."""
    store = tmp_path / "verdicts.txt"
    old = {"m.x_double__mutmut_1": "survived", "m.x_double__mutmut_2": "killed", "m.xǁBoxǁsize__mutmut_1": "killed"}
    R.record(a_run(tmp_path, "old", CODE, old), "m.py", "2026-11-29", "abc1234", 10, "all", path=store)
    cold = {"m.x_double__mutmut_1": "killed", "m.x_double__mutmut_2": "survived", "m.xǁBoxǁsize__mutmut_1": "not checked"}
    R.record(a_run(tmp_path, "cold", CODE, cold), "m.py", "2026-12-07", "def5678", 5, "m.x_double*", path=store)
    entry = R.load_store(store)["m.py"]
    assert entry["functions"]["double"][1] == [1] and entry["functions"]["Box.size"][1] == [0]
    assert entry["status"] == {"m.x_double__mutmut_2": "survived"}
    (tmp_path / "m.py").write_text(CODE)
    names = list(cold)
    _, runs = R.verdicts("m.py", names, R.load_store(store), root=tmp_path)
    assert runs == {"2026-11-29 abc1234 10 s: all": 1, "2026-12-07 def5678 5 s: m.x_double*": 2}


def test_never_run_is_never_equivalent_and_a_kill_wins_over_any_reason():
    equiv = {"m.x_f__mutmut_1": "same value", "m.x_f__mutmut_*": "not run: differs only on a CUDA device"}
    assert R.judge("m.x_f__mutmut_1", "survived", equiv)[0] == "equivalent"
    assert R.judge("m.x_f__mutmut_2", "survived", equiv) == ("not run", "differs only on a CUDA device")
    assert R.judge("m.x_f__mutmut_1", "killed", equiv)[0] == "killed"
    assert R.judge("m.x_f__mutmut_1", "segfault", {})[0] == "killed"
    assert R.judge("m.x_g__mutmut_1", "no tests", {"m.x_g__mutmut_1": "same value"})[0] == "not run"
    assert R.judge("m.x_g__mutmut_1", "not run", {"m.x_g__mutmut_1": "same value"})[0] == "not run"
    assert R.judge("m.x_g__mutmut_1", "survived", {})[0] == "surviving"


def test_the_committed_verdicts_parse_and_name_only_mutants_of_recorded_functions():
    store = R.load_store()
    assert "attention.py" in store and "train.py" in store
    for module, entry in store.items():
        assert entry["functions"], module
        for name in entry["status"]:
            assert R.function_of(name) in entry["functions"], name
        for code, runs in entry["functions"].values():
            assert len(code) == 12 and runs and all(0 <= run < len(entry["runs"]) for run in runs)
