"""
Throughput and peak memory of data/prepare.py on a fixed local parquet source, to compare two
versions of the preparation code on one machine.

    python tools/bench_prepare.py                         # 3 runs, 1 worker, ~4M tokens
    python tools/bench_prepare.py --workers 2 --repeat 5 --out bench.json

The source is made once, deterministically (seeded pseudo-English: words drawn from a Zipf-like
distribution over a fixed vocabulary, in documents of varied length), as several parquet files
with several row groups each, under --source-dir. Each run is a fresh `python data/prepare.py
fineweb-10B --source ... --force` in a subprocess; tokens/s is prepare.py's own figure (meta.json:
tokens over the time spent tokenizing and writing), tokens per CPU second of the whole process
(steadier than wall time on a shared machine), and the peak RSS, wall and CPU times come from
the kernel (scripts/bench_memory.py). The median of the runs is reported.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))   # tools/ may use scripts/, never the other way

from bench_memory import measure  # noqa: E402


def make_source(directory, files=4, docs_per_file=4000, seed=0):
    """Parquet files of seeded pseudo-English documents (made once; reused when present)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    names = [os.path.join(directory, f"{k:03d}.parquet") for k in range(files)]
    if all(os.path.exists(n) for n in names):
        return names
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    vocab = ["".join(rng.choice(letters, size=rng.integers(1, 10))) for _ in range(20000)]
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    weights /= weights.sum()
    for name in names:
        docs = []
        for _ in range(docs_per_file):
            words = rng.choice(len(vocab), size=int(rng.integers(20, 600)), p=weights)
            docs.append(". ".join(" ".join(vocab[w] for w in words[i:i + 12]).capitalize()
                                  for i in range(0, len(words), 12)) + ".")
        pq.write_table(pa.table({"text": docs}), name, row_group_size=1000)
    return names


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source-dir", default=os.path.join(tempfile.gettempdir(), "lssa-bench-prepare-source"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--shard-size", type=int, default=500_000, help="tokens per shard (several shards in all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    make_source(args.source_dir)
    runs = []
    with tempfile.TemporaryDirectory() as out_dir:
        command = [sys.executable, os.path.join(REPO, "data", "prepare.py"), "fineweb-10B", "--source",
                   args.source_dir, "--out-dir", out_dir, "--workers", str(args.workers), "--shard-size",
                   str(args.shard_size), "--force"]
        for _ in range(args.repeat):
            figures = measure(command)
            with open(os.path.join(out_dir, "meta.json")) as f:
                meta = json.load(f)
            figures["tokens_per_s"] = meta["tokens_per_second"]
            figures["tokens"] = sum(s["tokens"] for s in meta["splits"].values())
            # CPU time moves less than wall time on a shared machine (start-up included: the same for both)
            figures["tokens_per_cpu_s"] = round(figures["tokens"] / figures["cpu_s"])
            runs.append(figures)
            print(json.dumps(figures), flush=True)
    report = {"command": " ".join(["python", "tools/bench_prepare.py"] + (argv or sys.argv[1:])),
              "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
              "median_tokens_per_cpu_s": statistics.median(r["tokens_per_cpu_s"] for r in runs),
              "max_peak_rss_gib": max(r["peak_rss_gib"] for r in runs), "runs": runs}
    print(f"median {report['median_tokens_per_s']:,.0f} tokens/s ({report['median_tokens_per_cpu_s']:,.0f} per CPU "
          f"second, start-up included) over {len(runs)} runs of {runs[0]['tokens']:,} "
          f"tokens, peak RSS {report['max_peak_rss_gib']} GiB")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
