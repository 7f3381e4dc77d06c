"""
results/mutation.md from the per-module mutmut runs of scripts/mutation.sh:

    python scripts/mutation_report.py /tmp/lssa-mutation checkpoint.py model.py ... > results/mutation.md

Score = killed / (mutants tested - excluded). A mutant is excluded in tests/mutation_equivalent.txt
(one line per mutant, or a glob of mutant names: then why no test can tell it from the original,
or "GPU-only:" and why the CPU suite cannot reach it); every other survivor is listed with its
diff, to be killed by a test. Mutants a run did not reach (it was stopped) count as not run.
"""
import fnmatch
import json
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


def module_result(run_dir):
    """(stats, {mutant: status}, seconds, mutant selection) of one module's run, or None if it was not run."""
    stats_path = os.path.join(run_dir, "mutants", "mutmut-cicd-stats.json")
    if not os.path.exists(stats_path):
        return None
    with open(stats_path) as f:
        stats = json.load(f)
    status = {}
    with open(os.path.join(run_dir, "results.txt")) as f:
        for line in f:
            m = re.match(r"\s*(\S+): (.+)$", line)
            if m:
                status[m.group(1)] = m.group(2).strip()
    seconds = open(os.path.join(run_dir, "seconds")).read().strip()
    selection = open(os.path.join(run_dir, "selection")).read().strip() if os.path.exists(
        os.path.join(run_dir, "selection")) else ""
    return stats, status, seconds, selection


def diff(run_dir, name):
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=run_dir, capture_output=True, text=True).stdout
    return "\n".join(line for line in out.splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++"))


def main(work, modules):
    equiv = equivalents()
    rows, survivors, judged = [], [], []
    for module in modules:
        run_dir = os.path.join(work, module.replace("/", "_"))
        result = module_result(run_dir)
        if result is None:
            rows.append(f"| {module} | not run | | | | | | {TARGETS[module]} % | |")
            continue
        stats, status, seconds, selection = result
        tested = [n for n, s in status.items() if s not in ("skipped", "not checked")]
        killed = [n for n in tested if status[n] in ("killed", "timeout")]
        reason = {n: next((r for pat, r in equiv.items() if fnmatch.fnmatchcase(n, pat)), None) for n in tested}
        eq = [n for n in tested if n not in killed and reason[n]]
        alive = [n for n in tested if n not in killed and not reason[n]]
        score = 100 * len(killed) / max(1, len(killed) + len(alive))
        what = f"only `{selection}`" if selection else "all"
        if len(tested) < len(status):
            what += f", **partial: {len(status) - len(tested)} of {len(status)} not run**"
        rows.append(f"| {module} | {what} | {len(tested)} | {len(killed)} | {len(eq)} | {len(alive)} | "
                    f"**{score:.1f} %** | {TARGETS[module]} % | {seconds} s |")
        survivors += [(module, n, status[n]) for n in alive]
        judged += [(n, reason[n]) for n in eq]
    print("# Mutation testing: does the suite fail when the code is wrong?\n")
    print("Written by `bash scripts/mutation.sh` (mutmut 3, one module at a time with the test files chosen for it "
          "in the script); see docs/testing.md. Score = killed / (tested - equivalent).\n")
    print("| module | mutants | tested | killed | excluded | surviving | score | target | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n## Surviving mutants (not yet killed by a test)\n")
    if not survivors:
        print("None.")
    for module, name, st in survivors:
        print(f"### {name} ({st})\n```diff\n{diff(os.path.join(work, module.replace('/', '_')), name)}\n```")
    print("\n## Mutants excluded: equivalent, or GPU-only (tests/mutation_equivalent.txt)\n")
    for name, why in judged:
        print(f"- `{name}`: {why}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
