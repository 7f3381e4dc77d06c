"""
results/mutation.md from the per-module mutmut runs of tools/mutation.sh:

    python tools/mutation_report.py /tmp/lssa-mutation checkpoint.py model.py ... > results/mutation.md

    python tools/mutation_report.py --changed BASE model.py     # mutant globs of the functions changed since BASE

Every mutant of a module (mutmut's own list, $WORK/<module>.list) is killed, surviving, equivalent
or not run. Killed includes a timeout (a mutant that loops) and a test process killed by a signal.
tests/mutation_equivalent.txt names a mutant (or a glob) and why it is equivalent (no test on any
machine can tell), or "not run:" and why no CPU test can reach it (a real CUDA device). A mutant no
run of today tested takes the verdict carried over in results/mutation_carried.txt, if its function
is unchanged since; otherwise, or if that verdict was "not run", it counts as not run.
Score = killed / (all - equivalent): not run counts against it. The diffs of every equivalent and
not-run mutant, beside the reason, go to results/mutation_excluded.md.
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
WORK = os.environ.get("MUTATION_DIR", "/tmp/lssa-mutation")
ROOT = os.path.join(HERE, "..")
TARGETS.update({m: 90 for m in ("hf_lssa.py", "export_hf.py", "harness.py", "eval_downstream.py", "configurator.py",
                                "runinfo.py", "data/sources.py", "data/tokenizer.py", "data/catalog.py")})
TARGETS.update({"scripts/report.py": 80, "scripts/paper_plan.py": 80})


def equivalents():
    """{mutant name or glob: reason} from tests/mutation_equivalent.txt."""
    found = {}
    with open(os.path.join(HERE, "..", "tests", "mutation_equivalent.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                name, _, reason = line.strip().partition(" ")
                found[name] = reason.strip()
    return found


def functions(path, source=None):
    """{'name' or 'Class.name': its code as an AST dump} of a module's functions and methods."""
    found = {}
    for node in ast.parse(open(path).read() if source is None else source).body:
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


def at_commit(commit, module):
    """The module's source at a commit ('' if it did not exist)."""
    return subprocess.run(["git", "show", f"{commit}:{module}"], cwd=ROOT, capture_output=True, text=True).stdout


def mutant_glob(module, function):
    """'train.py', 'lr_at' -> 'train.x_lr_at__mutmut_*'; 'model.py', 'GPT.rope' -> 'model.xǁGPTǁrope__mutmut_*'."""
    prefix = module[:-3].replace("/", ".")
    return f"{prefix}.x{'ǁ' + function.replace('.', 'ǁ') if '.' in function else '_' + function}__mutmut_*"


def changed(base, module):
    """Mutant globs of the module's functions that differ between commit `base` and the working tree."""
    then = functions(module, at_commit(base, module) or "")
    now = functions(os.path.join(ROOT, module))
    return [mutant_glob(module, f) for f in now if then.get(f) != now[f]]


def carried(module):
    """({mutant: status} carried over for the module's functions unchanged since the carried runs,
    their commit): results/mutation_carried.txt lists the mutants not killed; the others were."""
    listed, at, mine, seconds = {}, None, False, 0
    with open(os.path.join(ROOT, "results", "mutation_carried.txt")) as f:
        for line in f:
            if line.startswith("@ "):
                mine = line.split()[1] == module
                if mine:
                    at, seconds = line.split()[2], int(line.split()[3])
            elif mine and ": " in line:
                name, _, status = line.strip().partition(": ")
                listed[name] = status
    if at is None:
        return {}, None, 0
    then, now = functions(module, at_commit(at, module)), functions(os.path.join(ROOT, module))
    fresh = {f for f in now if then.get(f) == now[f]}
    names = [n.split(":")[0].strip() for n in open(os.path.join(list_dir(module), "names.txt"))]
    return {n: listed.get(n, "killed") for n in names if function_of(n) in fresh}, at, seconds


def list_dir(module):
    return os.path.join(WORK, module.replace("/", "_") + ".list")


def diff(run_dir, name):
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=run_dir, capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++"))


def diffs(module, names):
    """{mutant: diff lines} from mutmut's own generator (the module's .list directory)."""
    cwd = os.getcwd()
    os.chdir(list_dir(module))
    try:
        from mutmut.mutation.diff_apply import get_diff_for_mutant
        return {n: "\n".join(line for line in get_diff_for_mutant(n, path=module).splitlines()
                              if line[:1] in "-+" and line[:3] not in ("---", "+++")) for n in names}
    finally:
        os.chdir(cwd)


def main(modules, not_yet):
    equiv = equivalents()
    rows, survivors, judged = [], [], []
    for module in modules:
        names = [n.split(":")[0].strip() for n in open(os.path.join(list_dir(module), "names.txt"))]
        status, at, then_seconds = carried(module)
        from_carried = {n for n in status}
        result = module_result(os.path.join(WORK, module.replace("/", "_")), module)
        seconds, what = 0, []
        if result:
            ran, seconds, selection, where = result
            today = {n: v for n, v in ran.items() if v not in ("skipped", "not checked", "check was interrupted by user")}
            status.update(today)
            from_carried -= set(today)
            what.append(f"{len(today)} run now ({selection})")
        if from_carried:
            what.insert(0, f"{len(from_carried)} carried over from {at} (runs of {then_seconds} s)")
        verdict, why = {}, {}
        for n in names:
            st = status.get(n, "not run")
            reason = next((r for pat, r in equiv.items() if fnmatch.fnmatchcase(n, pat)), None)
            if st in ("killed", "timeout", "segfault"):
                verdict[n] = "killed"
            elif reason and reason.startswith("not run:"):
                verdict[n], why[n] = "not run", reason[len("not run:"):].strip()
            elif st == "no tests":
                verdict[n], why[n] = "not run", ("no test calls its function in mutmut's own process (a test that "
                                                 "reaches it in a child process only, as tests/test_kernels.py's "
                                                 "interpreter runs do, is not mapped to it)")
            elif st == "not run":
                verdict[n], why[n] = "not run", ("excluded before as GPU-only or subprocess-only, so never run against a test that reaches it; a CPU test does (a stand-in for torch.cuda, a device name, or a child process): to be run"
                                                 if n in from_carried else "no run since its function changed")
            elif reason:
                verdict[n], why[n] = "equivalent", reason
            else:
                verdict[n] = "surviving"
        count = {v: sum(1 for n in names if verdict[n] == v) for v in ("killed", "surviving", "equivalent", "not run")}
        score = 100 * count["killed"] / max(1, len(names) - count["equivalent"])
        rows.append(f"| {module} | {len(names)} | {count['killed']} | {count['surviving']} | {count['equivalent']} | "
                    f"{count['not run']} | **{score:.1f} %** | {TARGETS[module]} % | {' + '.join(what)} | "
                    f"{seconds or ''}{' s' if seconds else ''} |")
        survivors += [(module, n) for n in names if verdict[n] == "surviving"]
        judged += [(module, n, verdict[n], why[n]) for n in names if verdict[n] in ("equivalent", "not run")]
    for module in not_yet:
        n = sum(1 for _ in open(os.path.join(list_dir(module), "names.txt")))
        rows.append(f"| {module} | {n} | | | | {n} | **0.0 %** | {TARGETS[module]} % | not run: not mutated yet | |")
    print("# Mutation testing: does the suite fail when the code is wrong?\n")
    print("Written by `bash tools/mutation.sh` (mutmut 3, one module at a time with the test files chosen for it "
          "in the script); see docs/testing.md. Every mutant mutmut generates is killed, surviving, equivalent "
          "(no test on any machine can tell it from the original; the reason in tests/mutation_equivalent.txt) "
          "or not run (never tested against a test that reaches it, or different only on a real CUDA device). "
          "Score = killed / (all - equivalent): not run counts against it. *Verdicts* says which verdicts were "
          "carried over from earlier runs (results/mutation_carried.txt: functions unchanged since that commit) "
          "and which come from runs of the code as it is now. The diff of every equivalent and not-run mutant, "
          "beside its reason: results/mutation_excluded.md.\n")
    print("| module | mutants | killed | surviving | equivalent | not run | score | target | verdicts | time of the runs of now |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n## Surviving mutants (not yet killed by a test)\n")
    if not survivors:
        print("None.")
    by_module = {}
    for module, n in survivors:
        by_module.setdefault(module, []).append(n)
    for module, names in by_module.items():
        for n, d in diffs(module, names).items():
            print(f"### {n}\n```diff\n{d}\n```")
    with open(os.path.join(ROOT, "results", "mutation_excluded.md"), "w") as out:
        out.write("# Mutants not counted as killed or surviving: equivalent, or not run\n\n"
                  "Written by `bash tools/mutation.sh --report` beside results/mutation.md: each mutant's diff "
                  "(from mutmut's own generator) and why it is equivalent (tests/mutation_equivalent.txt) or was "
                  "not run.\n")
        for module in modules:
            mine = [(n, v, w) for m, n, v, w in judged if m == module]
            if not mine:
                continue
            d = diffs(module, [n for n, _, _ in mine])
            out.write(f"\n## {module}\n")
            for n, v, w in mine:
                out.write(f"\n### {n}: {v}\n{w}\n```diff\n{d[n]}\n```\n")


if __name__ == "__main__":
    if sys.argv[1] == "--changed":
        print(" ".join(changed(sys.argv[2], sys.argv[3])))
    else:
        WORK = sys.argv[1]
        args = sys.argv[2:]
        cut = args.index("--") if "--" in args else len(args)
        main(args[:cut], args[cut + 1:])
