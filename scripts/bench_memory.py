"""
Peak memory and time of a command, for the CPU runs whose allocator runinfo.keep_freed_memory()
sets: what a change to it, or to what a script allocates, costs and saves.

    python scripts/bench_memory.py -- python eval_length.py out/demo-softmax --tokens 65536
    python scripts/bench_memory.py --repeat 2 --out bench.json -- python train.py config/demo_cpu.py --max_iters=40

Runs the command --repeat times, one after the other, and reports for each run its peak
resident set size, wall time, CPU time (user + system: on a machine shared with other work it
moves less than the wall time does), minor page faults (each a page the kernel had to map and
zero: the cost that keep_freed_memory() avoids), and the 1-minute load average before and after.
On Linux a child's peak RSS starts at what its parent had resident when it forked, so this
script measures from a small process: it imports torch (through runinfo) only after the runs.
"""
import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure(command):
    """One run of command (an argument list): its figures, from the kernel's accounting of that process."""
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the command failed (exit status {os.waitstatus_to_exitcode(status)}): {' '.join(command)}")
    return {"peak_rss_gib": round(usage.ru_maxrss * 1024 / 2**30, 3),  # Linux reports kB
            "wall_s": round(wall, 1), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "user_s": round(usage.ru_utime, 1), "sys_s": round(usage.ru_stime, 1),
            "minor_faults": usage.ru_minflt, "load_before": round(load_before, 1),
            "load_after": round(os.getloadavg()[0], 1)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        raise SystemExit("usage: python scripts/bench_memory.py [--repeat N] [--out JSON] -- COMMAND ...")
    split = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=1, help="runs of the command (default 1)")
    p.add_argument("--out", default=None, help="JSON path")
    args = p.parse_args(argv[:split])
    command = argv[split + 1:]
    runs = []
    for i in range(args.repeat):
        runs.append(measure(command))
        r = runs[-1]
        print(f"run {i + 1}/{args.repeat}: peak RSS {r['peak_rss_gib']:.2f} GiB, wall {r['wall_s']:.1f} s, "
              f"CPU {r['cpu_s']:.1f} s (user {r['user_s']:.1f}, sys {r['sys_s']:.1f}), "
              f"{r['minor_faults']:,} minor page faults, load {r['load_before']} -> {r['load_after']}", flush=True)
    from runinfo import code_version, hardware, write_json   # torch: after the runs (see above)
    report = {"command": command, "code": code_version(), "hardware": hardware(), "runs": runs}
    if args.out:
        write_json(report, args.out)
    return report


if __name__ == "__main__":
    main()
