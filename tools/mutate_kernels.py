"""
Curated mutants of the fused Triton kernels, each run under Triton's CPU interpreter against the
reference: does tests/test_kernels.py fail when the kernel maths is wrong? mutmut cannot mutate
these (Triton parses the kernels' source), so each mutant here is a small text patch of
kernels/lssa_triton.py, applied to a scratch copy of the repo.

    python tools/mutate_kernels.py                       # every mutant, the test's interpreter cases
    python tools/mutate_kernels.py --only tau-grad       # some of them
    python tools/mutate_kernels.py --measure             # the unmutated kernels' errors per case
    python tools/mutate_kernels.py --report              # rewrite the report from the stored results
    python tools/mutate_kernels.py --measure --only tau-grad     # a mutant's errors per case

A mutant is killed when an interpreter case of tests/test_kernels.py fails on it (NaN, a crash, or
an error above the case's tolerance, tests/test_kernels.py's interpreter_tol). The report says
which cases kill it, fp32 and 16-bit apart: the 16-bit tolerances must be tight enough that a
wrong backward fails there too. Every patch must occur exactly once in the kernels' source, checked
before anything runs (the kernels change; a patch that silently did not apply would pass the
unmutated kernels off as a killed mutant). Writes results/mutation_kernels.md. About 30 s of CPU
per mutant (all the interpreter cases) on 2 loaded cores; not part of CI (see docs/testing.md).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import test_kernels  # noqa: E402  (the interpreter cases, their child program and tolerances)

# (name, what the bug is, text in kernels/lssa_triton.py, its replacement)
MUTANTS = [
    ("tau-grad", "lssar's backward without the gradient through the threshold tau",
     "dw = (kc * pm1 + fc) * (dp - dd) - e", "dw = (kc * pm1 + fc) * (dp - dd)"),
    ("tau-grad-R", "the threshold gradient without its D·R term",
     "tl.sum(do * u, 1) - dd * tl.load(S + 5 * T, mask=row_ok, other=0.0))", "tl.sum(do * u, 1))"),
    ("offset-fwd", "the forward's threshold from the third row instead of the fourth",
     "tau = tl.where(offs_m >= 3, tl.math.div_rn", "tau = tl.where(offs_m >= 2, tl.math.div_rn"),
    ("offset-bwd", "the threshold gradient from the third row instead of the fourth",
     "e = tl.where(offs_m >= 3, g / (offs_m + 1)", "e = tl.where(offs_m >= 2, g / (offs_m + 1)"),
    ("no-fallback", "rows at or below uniform not falling back to lssa",
     "x = tl.where(fb[:, None], w, x)", "x = x"),
    ("causal-fwd", "the forward's diagonal block sees the key on its own row excluded",
     "keep = offs_m[:, None] >= offs_n[None, :]\n            x = tl.where(keep, x, 0.0)",
     "keep = offs_m[:, None] > offs_n[None, :]\n            x = tl.where(keep, x, 0.0)"),
    ("causal-dq", "dQ's diagonal block sees future keys",
     "ds = tl.where(offs_m[:, None] >= offs_n[None, :], ds, 0.0)", "ds = ds"),
    ("power-int", "the integer power's derivative b^p instead of b^(p-1)",
     "pm1 = _ipow(b, P_INT - 1)", "pm1 = _ipow(b, P_INT)"),
    ("power-float", "the non-integer power's derivative b^p instead of b^(p-1)",
     "tl.exp2((p - 1.0) * lb)", "tl.exp2(p * lb)"),
    ("softplus-grad", "the score gradient without softplus' derivative",
     "ds = dw * tl.exp2(s - w)", "ds = dw"),
    ("norm-chain", "q/k gradients without the chain rule through the QK-norm",
     "g = g - xf * (_norm_chain(nrm) * tl.sum(xf * g, 1))[:, None]", "g = g"),
    ("row-scale", "the length scale ln(i) one row off",
     "log2_i = torch.log2(i) if", "log2_i = torch.log2(i + 1) if"),
    ("softplus-series", "softplus' series for small u = 2^-abs(s2) with a wrong third term",
     "u * (_LOG2E / 2 - u * (_LOG2E / 3))", "u * (_LOG2E / 2 - u * (_LOG2E / 4))"),
    ("softplus-branch", "softplus' series used where it is inaccurate (u above 1/64) and not below",
     "tl.where(u < _SERIES_MAX, series,", "tl.where(u > _SERIES_MAX, series,"),
    ("dv-weights", "dV from the unnormalised re-weighted weights",
     "a = x * invx + w * fc", "a = x + w * fc"),
    # the recipe paths of the one kernel family (sigmoid, relu, exp; with and without l1)
    ("sigmoid-grad", "sigmoid's score gradient without its (1 - σ) factor",
     "ds = dw * (_LN2 * w * (1.0 - w * crow))", "ds = dw * (_LN2 * w)"),
    ("sigmoid-grad-L", "l1 sigmoid's σ taken as the max-subtracted weight (without the row's 2^L)",
     "(1.0 - w * crow)", "(1.0 - w)"),
    ("sigmoid-scale", "sigmoid's length bias -log2(i) one row off",
     "beta = (-torch.log2(i))", "beta = (-torch.log2(i + 1))"),
    ("online-rescale", "the exp / l1 sigmoid row sum not rescaled when the row maximum grows",
     "z = z * tl.exp2(wmax - new) + ", "z = z + "),
    ("relu-empty-row", "relu_l1's row without weight (Z = 0) divided by its zero sum",
     "inv_x = 1.0 / tl.where(xsum > 0.0, xsum, 1.0)", "inv_x = 1.0 / xsum"),
]


# Mutants no test can tell from the original at the tests' precision, and why.
EQUIVALENT = {
    "softplus-series": "the series is used only for u = 2^-|s2| < 1/64, where the third term changes w by at most "
                       "log2(e)(1/3 - 1/4)u^3 < 5e-7 (relative < 2e-5 of w): 200x below the fp32 tolerance 1e-4",
}
# mutants of code that 16-bit inputs never run, so no bf16/fp16 case can fail on them
FP32_ONLY = {
    "softplus-branch": "softplus' series and its branch run for fp32 inputs only; 16-bit inputs take log2(1 + u) "
                       "as u·q(u)",
}


def run_cases(repo, cases):
    """{case name: {"nan", "err"}} from tests/test_kernels.py's child program on repo's code, or
    {"crash": message}."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", test_kernels._CHILD, repo], input=json.dumps(cases),
                          capture_output=True, text=True, env=env, cwd=repo, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS")]
    if proc.returncode or not lines:
        return {"crash": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1][len("RESULTS"):])


def failures(results, cases):
    """Names of the cases the test fails on these results."""
    if "crash" in results:
        return [c["name"] for c in cases]
    bad = []
    for c in cases:
        res = results[c["name"]]
        if res["nan"] or any(not e <= test_kernels.interpreter_tol(c, name) for name, e in res["err"].items()):
            bad.append(c["name"])
    return bad


def scratch_copy(patch=None):
    d = tempfile.mkdtemp(prefix="lssa-kernel-mutant-")
    for name in ("attention.py", "kernels"):
        src = os.path.join(ROOT, name)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(src, os.path.join(d, name))
    if patch:
        path = os.path.join(d, "kernels", "lssa_triton.py")
        text = open(path).read()
        old, new = patch
        open(path, "w").write(text.replace(old, new))
    return d


def check_patches(mutants):
    """Fail, before running anything, on a patch whose text is not in the kernels exactly once: a
    patch that silently does not apply would report the unmutated kernels as a killed mutant's."""
    text = open(os.path.join(ROOT, "kernels", "lssa_triton.py")).read()
    stale = [f"  {name}: occurs {text.count(old)} times: {old!r}" for name, _, old, _ in mutants
             if text.count(old) != 1]
    if stale:
        raise SystemExit("these mutants' text is not in kernels/lssa_triton.py exactly once (the kernels "
                         f"changed): re-target them in MUTANTS in {__file__}\n" + "\n".join(stale))


def cases_run(rows):
    """How many of the test's interpreter cases the mutants ran on, in words."""
    counts = sorted({len(r["cases"]) for _, _, r in rows})
    n = len(test_kernels.INTERPRETER_CASES)
    return f"all {n} cases" if counts == [n] else f"{' or '.join(map(str, counts))} of its {n} cases (--cases)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", help="mutant names (default: all)")
    ap.add_argument("--measure", action="store_true",
                    help="print the errors per case of the kernels (or of the one mutant --only names) and exit")
    ap.add_argument("--report", action="store_true", help="only rewrite the report from the stored results")
    ap.add_argument("--cases", nargs="+", help="only the interpreter cases whose names contain one of these")
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "mutation_kernels.md"))
    args = ap.parse_args(argv)
    unknown = set(args.only or ()) - {m[0] for m in MUTANTS}
    if unknown:
        raise SystemExit(f"unknown mutant(s) {sorted(unknown)}; the mutants: {[m[0] for m in MUTANTS]}")
    check_patches(MUTANTS)
    cases = [c for c in test_kernels.INTERPRETER_CASES if not args.cases or any(s in c["name"] for s in args.cases)]
    if args.measure:
        patch = [(old, new) for name, _, old, new in MUTANTS if args.only and name in args.only]
        d = scratch_copy(patch[0] if patch else None)
        results = run_cases(d, cases)
        shutil.rmtree(d)
        for c in cases:
            print(c["name"], c["dtype"], {n: f"{e:.2e}" for n, e in results[c["name"]]["err"].items()})
        print("failing:", failures(results, cases) or "none")
        return
    chosen = [] if args.report else [m for m in MUTANTS if not args.only or m[0] in args.only]
    # results accumulate in a JSON beside the report, so that --only reruns some and keeps the rest
    store = os.path.splitext(args.out)[0] + ".json"
    done = json.load(open(store)) if os.path.exists(store) else {}
    for name, what, old, new in chosen:
        d = scratch_copy((old, new))
        t = time.time()
        results = run_cases(d, cases)
        bad = failures(results, cases)
        shutil.rmtree(d)
        low = [c for c in bad if next(x for x in cases if x["name"] == c)["dtype"] != "float32"]
        compared = lambda c, n: test_kernels.interpreter_tol(c, n) != float("inf")  # noqa: E731
        worst = {c["name"]: max(e for n, e in results[c["name"]]["err"].items() if compared(c, n))
                 for c in cases if c["name"] in test_kernels.MEASURED_16 and c["name"] in results}
        done[name] = {"cases": [c["name"] for c in cases], "failing": bad, "failing_16bit": low,
                      "errors_16bit": worst, "seconds": round(time.time() - t)}
        print(f"{name:<16} {'killed' if bad else 'SURVIVED'} by {len(bad)} case(s), {len(low)} of them 16-bit "
              f"({time.time() - t:.0f} s)", flush=True)
        json.dump(done, open(store, "w"), indent=1)   # after each mutant: a stopped run keeps what it finished
    rows = [(name, what, done[name]) for name, what, _, _ in MUTANTS if name in done]
    killed = sum(1 for _, _, r in rows if r["failing"])
    with open(args.out, "w") as f:
        f.write("# Kernel mutants (tools/mutate_kernels.py)\n\n"
                f"`python tools/mutate_kernels.py` on this CPU machine: each mutant run on the interpreter cases of "
                f"tests/test_kernels.py (TRITON_INTERPRET=1; {cases_run(rows)}, named per mutant in "
                "results/mutation_kernels.json). A mutant "
                "is killed when a case fails; the last column names the bf16/fp16 cases that fail on it.\n\n"
                f"Killed: {killed} of {len(rows)}; equivalent: {sum(1 for n, _, r in rows if not r['failing'] and n in EQUIVALENT)}."
                "\n\n| mutant | the bug | cases failing | 16-bit cases failing |\n|---|---|---|---|\n")
        for name, what, r in rows:
            verdict = (f"{len(r['failing'])} of {len(r['cases'])}" if r["failing"] else
                       "none: equivalent (below)" if name in EQUIVALENT else "**none: survived**")
            f.write(f"| {name} | {what} | {verdict} | {', '.join(r['failing_16bit']) or '-'} |\n")
        f.write("\n## Equivalent\n\n" + "".join(f"- {n}: {why}\n" for n, why in EQUIVALENT.items()))
        f.write("\n## No 16-bit case can fail on\n\n" + "".join(f"- {n}: {why}\n" for n, why in FP32_ONLY.items()))
        # the margins both ways: the correct kernel's error under the tolerance, the mutants' above it
        f.write(f"\n## 16-bit tolerances\n\nEach bf16/fp16 case's tolerance is {test_kernels.MARGIN_16:g}x the largest "
                "error (over out, dq, dk, dv, relative to the reference's largest value) the correct kernels reach "
                "on it (`MEASURED_16` in tests/test_kernels.py, from `python tools/mutate_kernels.py --measure "
                "--cases bf16 fp16`); the last column is the smallest error among the mutants that fail the case.\n\n"
                "| case | correct kernel | tolerance | failing mutants | smallest failing error |\n|---|---|---|---|---|\n")
        for case, measured in test_kernels.MEASURED_16.items():
            hit = [(r["errors_16bit"][case], n) for n, _, r in rows if case in r["failing_16bit"] and case in r.get("errors_16bit", {})]
            tol = test_kernels.MARGIN_16 * measured
            f.write(f"| {case} | {measured:.2e} | {tol:.2e} | {len(hit)} | "
                    f"{f'{min(hit)[0]:.2e} ({min(hit)[1]})' if hit else '-'} |\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
