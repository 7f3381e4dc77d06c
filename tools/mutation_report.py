"""
results/mutation.md from the verdicts of tools/mutation.sh's mutmut runs:

    python tools/mutation_report.py --record RUN_DIR MODULE SECONDS [SELECTION]   # after each run
    python tools/mutation_report.py /tmp/lssa-mutation checkpoint.py model.py ... > results/mutation.md
    python tools/mutation_report.py --changed BASE model.py     # mutant globs of the functions changed since BASE

Every run's verdicts are kept in results/mutation_verdicts.txt, committed with the code they judge:
per function, the hash of its syntax tree when tested, so a report never needs the scratch runs
(they live in /tmp) and a function changed since counts as not run. Every mutant of a module
(mutmut's own list, $WORK/<module>.list) is killed, surviving, equivalent or not run. Killed includes
a timeout (a mutant that loops) and a test process killed by a signal. tests/mutation_equivalent.txt
names a mutant (or a glob) and why it is equivalent (no test on any machine can tell), or "not run:"
and why no CPU test can reach it (a real CUDA device).
Score = killed / (all - equivalent): not run counts against it. The diffs of every equivalent and
not-run mutant, beside the reason, go to results/mutation_excluded.md.
"""
import ast
import hashlib
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
                                "runinfo.py", "data/sources.py", "data/tokenizer.py", "data/catalog.py",
                                "kernels/lssa_triton.py")})
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
    """{'name' or 'Class.name': its code as an AST dump} of a module's functions and methods (mutmut
    mutates these; a comment or blank line changes nothing here)."""
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


STORE = os.path.join(ROOT, "results", "mutation_verdicts.txt")
DONE = ("killed", "timeout", "segfault")          # mutmut's verdicts that count as killed
UNTESTED = ("not checked", "skipped", "check was interrupted by user")   # no verdict


def fingerprint(code):
    """A short hash of a function's syntax tree: its verdicts hold while the hash matches today's."""
    return hashlib.sha1(code.encode()).hexdigest()[:12]


def load_store(path=None):
    """{module: {"runs": [run line], "functions": {function: (hash, run index)}, "status": {mutant: status}}}
    from results/mutation_verdicts.txt. A function listed there had every mutant tested by the run it
    names, on code with that hash; its mutants listed with a status were not killed, the others were."""
    store, mine = {}, None
    with open(path or STORE) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            if line.startswith("@ "):
                mine = store.setdefault(line[2:].strip(), {"runs": [], "functions": {}, "status": {}})
            elif line.startswith("run "):
                mine["runs"].append(line[4:])
            elif line.startswith("= "):
                function, code, runs = line[2:].split()
                mine["functions"][function] = (code, [int(r) for r in runs.split(",")])
            else:
                name, _, status = line.partition(": ")
                mine["status"][name] = status
    return store


def save_store(store, path=None):
    """Write the store back, modules and functions in a stable order (a run changes only its lines)."""
    lines = ["# Every mutant's last verdict, kept with the code: tools/mutation.sh records each run here",
             "# (tools/mutation_report.py --record) and results/mutation.md is built from this file alone.",
             "# Per module: `run DATE COMMIT SECONDS s: SELECTION` (each run that still gives a verdict, numbered",
             "# from 0 in order), `= FUNCTION HASH RUNS` (the function's mutants were tested by those runs, the",
             "# later ones retesting some, on code whose syntax tree has that hash: the verdicts hold while the",
             "# hash matches today's code),",
             "# then `MUTANT: STATUS` for each mutant of those functions that was not killed; the others were.",
             "# A function with no `=` line, or whose hash differs from today's, counts as not run."]
    for module in sorted(m for m in store if store[m]["functions"]):
        entry = store[module]
        used = sorted({run for _, runs in entry["functions"].values() for run in runs})
        renumber = {old: new for new, old in enumerate(used)}
        lines.append(f"@ {module}")
        lines += [f"run {entry['runs'][old]}" for old in used]
        lines += [f"= {f} {code} {','.join(str(renumber[r]) for r in runs)}"
                  for f, (code, runs) in sorted(entry["functions"].items())]
        lines += [f"{n}: {st}" for n, st in sorted(entry["status"].items(), key=lambda kv: natural(kv[0]))
                  if function_of(n) in entry["functions"]]
    with open(path or STORE, "w") as f:
        f.write("\n".join(lines) + "\n")


def natural(name):
    """'x_f__mutmut_10' after 'x_f__mutmut_9'."""
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


def record(run_dir, module, when, commit, seconds, selection, path=None):
    """Fold one mutmut run (its results.txt, and its copy of the module: the code it mutated) into the
    store. A function with any mutant tested in the run takes the run's verdicts: all of them if its
    code changed since its last verdicts (its untested mutants then have none: not run), else the
    tested ones beside the older; a run that tested all of a function's mutants is from then on the
    only run its verdicts come from. Returns the number of functions updated."""
    store = load_store(path) if os.path.exists(path or STORE) else {}
    entry = store.setdefault(module, {"runs": [], "functions": {}, "status": {}})
    code = {f: fingerprint(c) for f, c in functions(os.path.join(run_dir, module)).items()}
    ran = {}
    with open(os.path.join(run_dir, "results.txt")) as f:
        for line in f:
            m = re.match(r"\s*(\S+__mutmut_\d+): (.+)$", line)
            if m:
                ran.setdefault(function_of(m.group(1)), {})[m.group(1)] = m.group(2).strip()
    entry["runs"].append(f"{when} {commit} {seconds} s: {selection or 'all'}")
    run, updated = len(entry["runs"]) - 1, 0
    for function, verdicts in ran.items():
        tested = {n: v for n, v in verdicts.items() if v not in UNTESTED}
        if not tested or function not in code:
            continue
        updated += 1
        same = entry["functions"].get(function, (None,))[0] == code[function]
        # the runs whose verdicts stand: this one alone where it tested every mutant of the function
        runs = entry["functions"][function][1] if same and len(tested) < len(verdicts) else []
        if not same:   # new code: the older verdicts of this function no longer hold
            entry["status"] = {n: v for n, v in entry["status"].items() if function_of(n) != function}
            tested = verdicts
        for n, v in tested.items():
            if v == "killed":
                entry["status"].pop(n, None)
            else:
                entry["status"][n] = v
        entry["functions"][function] = (code[function], runs + [run])
    if updated:
        save_store(store, path)
    return updated


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


def verdicts(module, names, store, root=ROOT):
    """({mutant: mutmut status, or "not run"}, {run line: how many verdicts it gives}) of a module from the
    store: a function's verdicts count while its code (syntax tree) is what was tested."""
    entry = store.get(module, {"runs": [], "functions": {}, "status": {}})
    today = {f: fingerprint(c) for f, c in functions(os.path.join(root, module)).items()}
    status, runs = {}, {}
    for n in names:
        code, ran = entry["functions"].get(function_of(n), (None, None))
        if code is not None and code == today.get(function_of(n)):
            status[n] = entry["status"].get(n, "killed")
            first, *later = [entry["runs"][r] for r in ran]   # a verdict counts for the run that first tested it
            runs[first] = runs.get(first, 0) + 1
            for r in later:                                    # later runs retested some of its mutants
                runs.setdefault(r, 0)
        else:
            status[n] = "not run"
    return status, runs


def judge(name, status, equiv):
    """(killed | surviving | equivalent | not run, why) of one mutant from its mutmut status and the
    judged equivalences {name or glob: reason}. A kill wins over any reason; a "not run:" reason (a
    difference only a real CUDA device shows) or no test reaching it is not run, never equivalent."""
    reason = next((r for pat, r in equiv.items() if fnmatch.fnmatchcase(name, pat)), None)
    if status in DONE:
        return "killed", None
    if reason and reason.startswith("not run:"):
        return "not run", reason[len("not run:"):].strip()
    if status == "no tests":
        return "not run", ("no test calls its function in mutmut's own process (a test that reaches it in a "
                           "child process only is not mapped to it)")
    if status in ("not run",) + UNTESTED:
        return "not run", "no run of its function's code as it is now (changed since its last run, or never run)"
    if reason:
        return "equivalent", reason
    return "surviving", None


def main(modules, not_yet):
    equiv = equivalents()
    store = load_store()
    rows, survivors, judged = [], [], []
    for module in modules + not_yet:
        names = [n.split(":")[0].strip() for n in open(os.path.join(list_dir(module), "names.txt"))]
        status, runs = verdicts(module, names, store)
        verdict, why = {}, {}
        for n in names:
            verdict[n], why[n] = judge(n, status[n], equiv)
        count = {v: sum(1 for n in names if verdict[n] == v) for v in ("killed", "surviving", "equivalent", "not run")}
        score = 100 * count["killed"] / max(1, len(names) - count["equivalent"])   # not run counts against
        seconds = sum(int(r.split()[2]) for r in runs)
        what = "; ".join((f"{k} from" if k else "reruns on") + f" {r.split()[0]} at {r.split()[1]} ({r.split(': ', 1)[1]})"
                         for r, k in runs.items())
        rows.append(f"| {module} | {len(names)} | {count['killed']} | {count['surviving']} | {count['equivalent']} | "
                    f"{count['not run']} | **{score:.1f} %** | {TARGETS[module]} % | {what or 'not mutated yet'} | "
                    f"{seconds or ''}{' s' if seconds else ''} |")
        survivors += [(module, n) for n in names if verdict[n] == "surviving"]
        judged += [(module, n, verdict[n], why[n]) for n in names
                   if verdict[n] == "equivalent" or verdict[n] == "not run" and runs]
    print("# Mutation testing: does the suite fail when the code is wrong?\n")
    print("Written by `bash tools/mutation.sh` (mutmut 3, one module at a time with the test files chosen for it "
          "in the script); see docs/testing.md. Every mutant mutmut generates is killed, surviving, equivalent "
          "(no test on any machine can tell it from the original; the reason in tests/mutation_equivalent.txt) "
          "or not run (never tested against a test that reaches it, or different only on a real CUDA device). "
          "Score = killed / (all - equivalent): not run counts against it. Every verdict comes from "
          "results/mutation_verdicts.txt, which keeps each run's verdicts with a hash of the code of each "
          "function it tested; a function changed since counts as not run. *Verdicts* says which runs (date, "
          "commit, mutants chosen) give how many of the module's verdicts, *time* what those runs took (wall "
          "clock on 2 shared CPU cores). The diff of every equivalent and not-run mutant, beside its reason: "
          "results/mutation_excluded.md.\n")
    print("| module | mutants | killed | surviving | equivalent | not run | score | target | verdicts | time |")
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
        for module in modules + not_yet:
            mine = [(n, v, w) for m, n, v, w in judged if m == module]
            if not mine:
                continue
            d = diffs(module, [n for n, _, _ in mine])
            out.write(f"\n## {module}\n")
            for n, v, w in mine:
                out.write(f"\n### {n}: {v}\n{w}\n```diff\n{d[n]}\n```\n")


def commit_of():
    """The short commit of HEAD, with '+' when the working tree differs from it: tools/mutation.sh's scratch
    copy takes uncommitted and untracked (not ignored) files too, the tests' as well as the module's."""
    git = dict(cwd=ROOT, capture_output=True, text=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], **git).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], **git).stdout.strip() != ""
    return head + ("+" if dirty else "")


if __name__ == "__main__":
    if sys.argv[1] == "--changed":
        print(" ".join(changed(sys.argv[2], sys.argv[3])))
    elif sys.argv[1] == "--commit":   # the code a run starting now tests (tools/mutation.sh keeps it in RUN_DIR/commit)
        print(commit_of())
    elif sys.argv[1] == "--record":   # --record RUN_DIR MODULE SECONDS [SELECTION...]
        run_dir, module, seconds = sys.argv[2:5]
        import datetime
        started = os.path.join(run_dir, "commit")   # written when the run began
        commit = open(started).read().strip() if os.path.exists(started) else commit_of()
        n = record(run_dir, module, datetime.date.today().isoformat(), commit, int(seconds), " ".join(sys.argv[5:]))
        print(f"recorded the verdicts of {n} functions of {module} in results/mutation_verdicts.txt")
    else:
        WORK = sys.argv[1]
        args = sys.argv[2:]
        cut = args.index("--") if "--" in args else len(args)
        main(args[:cut], args[cut + 1:])
