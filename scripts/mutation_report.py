"""
results/mutation.md from the per-module mutmut runs of scripts/mutation.sh:

    python scripts/mutation_report.py /tmp/lssa-mutation checkpoint.py model.py ... > results/mutation.md

Score = killed / (mutants tested - excluded); killed includes a timeout (a mutant that loops)
and a test process killed by a signal. A mutant is excluded in tests/mutation_equivalent.txt
(one line per mutant, or a glob of mutant names: then why no test can tell it from the original,
or "GPU-only:" and why the CPU suite cannot reach it); every other survivor is listed with its
diff, to be killed by a test. Mutants a run did not reach (it was stopped) count as not run.
"""
import ast
import fnmatch
import glob
import os
import re
import subprocess
import sys

TARGETS = {"attention.py": 90, "model.py": 90, "eval_length.py": 90, "checkpoint.py": 90, "data/shards.py": 90,
           "train.py": 80, "data/prepare.py": 80, "eval_passkey.py": 80}
HERE = os.path.dirname(os.path.abspath(__file__))


def equivalents():
    """{mutant name or glob: reason} from tests/mutation_equivalent.txt."""
    found = {}
    with open(os.path.join(HERE, "..", "tests", "mutation_equivalent.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, _, reason = line.strip().partition(" ")
                found[name] = reason.strip()
    return found


def functions(path):
    """{'name' or 'Class.name': its code as an AST dump} of a module's functions and methods."""
    found = {}
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = ast.dump(node)
        elif isinstance(node, ast.ClassDef):
            for m in node.body:
                if isinstance(m, ast.FunctionDef):
                    found[f"{node.name}.{m.name}"] = ast.dump(m)
    return found


def function_of(mutant):
    """'model.xǁGPTǁ__init____mutmut_3' -> 'GPT.__init__'; 'train.x_lr_at__mutmut_2' -> 'lr_at'."""
    name = mutant.rsplit("__mutmut_", 1)[0].split(".x", 1)[1]
    return ".".join(filter(None, name.split("ǁ"))) if name.startswith("ǁ") else name[1:]


def module_result(run_dir, module):
    """({mutant: status}, seconds, mutant selection, where) of one module's runs, or None if it was not
    run: its run directory and any reruns beside it (RUN_TAG), a later run's verdicts winning.
    A run's verdicts on a function whose code has changed since (its copy of the module differs
    from the repository's) are dropped: that function's mutants count as not run until rerun."""
    dirs = [d for d in glob.glob(run_dir) + glob.glob(run_dir + ".*") if os.path.exists(os.path.join(d, "results.txt"))]
    dirs.sort(key=lambda d: os.path.getmtime(os.path.join(d, "setup.cfg")))  # by when each run started
    if not dirs:
        return None
    status, seconds, selection = {}, 0, []
    now = functions(os.path.join(HERE, "..", module))
    for d in dirs:
        then = functions(os.path.join(d, module))
        stale = {f for f in now if then.get(f) != now[f]}
        with open(os.path.join(d, "results.txt")) as f:
            for line in f:
                m = re.match(r"\s*(\S+): (.+)$", line)
                if not m:
                    continue
                verdict = "not checked" if function_of(m.group(1)) in stale else m.group(2).strip()
                if verdict != "not checked" or m.group(1) not in status:
                    status[m.group(1)] = verdict
        seconds += int(open(os.path.join(d, "seconds")).read().strip())
        chosen = open(os.path.join(d, "selection")).read().split() if os.path.exists(os.path.join(d, "selection")) else []
        selection.append("all" if not chosen else " ".join(chosen) if len(chosen) <= 4 else
                         f"rerun of {len(chosen)} mutants" + (" or patterns" if any("*" in c for c in chosen) else ""))
        if os.path.exists(os.path.join(d, "continued")):  # KEEP=1: unchanged functions' verdicts carried over
            selection[-1] = f"continued ({open(os.path.join(d, 'continued')).read().splitlines()[-1]})"
    # the newest run lists every mutant of the code as it is now; names only older runs have are
    # of code since changed (a rerun of a changed function tests its mutants anew, as the newest)
    with open(os.path.join(dirs[-1], "results.txt")) as f:
        current = {m.group(1) for m in re.finditer(r"^\s*(\S+): ", f.read(), re.M)}
    status = {n: v for n, v in status.items() if n in current}
    return status, seconds, " + ".join(selection), dirs[-1]


def diff(run_dir, name):
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=run_dir, capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++"))


def main(work, modules):
    equiv = equivalents()
    rows, survivors, judged = [], [], []
    for module in modules:
        run_dir = os.path.join(work, module.replace("/", "_"))
        result = module_result(run_dir, module)
        if result is None:
            rows.append(f"| {module} | not run | | | | | | {TARGETS[module]} % | |")
            continue
        status, seconds, selection, where = result
        tested = [n for n, s in status.items() if s not in ("skipped", "not checked", "check was interrupted by user")]
        # a test process killed by a signal (mutmut's "segfault": -9 or -11) is a failing suite too
        killed = [n for n in tested if status[n] in ("killed", "timeout", "segfault")]
        reason = {n: next((r for pat, r in equiv.items() if fnmatch.fnmatchcase(n, pat)), None) for n in tested}
        eq = [n for n in tested if n not in killed and reason[n]]
        alive = [n for n in tested if n not in killed and not reason[n]]
        score = 100 * len(killed) / max(1, len(killed) + len(alive))
        what = " + ".join(s if s == "all" or s.startswith(("rerun", "continued")) else f"`{s}`"
                          for s in selection.split(" + "))
        if len(tested) < len(status):
            what += f", **partial: {len(status) - len(tested)} of {len(status)} not run**"
        rows.append(f"| {module} | {what} | {len(tested)} | {len(killed)} | {len(eq)} | {len(alive)} | "
                    f"**{score:.1f} %** | {TARGETS[module]} % | {seconds} s |")
        survivors += [(where, n, status[n]) for n in alive]
        judged += [(n, reason[n]) for n in eq]
    print("# Mutation testing: does the suite fail when the code is wrong?\n")
    print("Written by `bash scripts/mutation.sh` (mutmut 3, one module at a time with the test files chosen for it "
          "in the script); see docs/testing.md. Score = killed / (tested - excluded).\n")
    print("| module | mutants | tested | killed | excluded | surviving | score | target | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n## Surviving mutants (not yet killed by a test)\n")
    if not survivors:
        print("None.")
    for where, name, st in survivors:
        print(f"### {name} ({st})\n```diff\n{diff(where, name)}\n```")
    print("\n## Mutants excluded: equivalent, or GPU-only (tests/mutation_equivalent.txt)\n")
    for name, why in judged:
        print(f"- `{name}`: {why}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
