"""eval_length.py, scripts/plot_length.py and scripts/sample.py on tiny trained checkpoints."""
import csv
import json
import os
import subprocess
import sys

import pytest
import torch

import eval_length
from checkpoint import load_model
from data.shards import ShardError, load_tokens, val_windows

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def sweep(trained_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("results") / "sweep.json"
    runs = [trained_runs[a] for a in ("softmax", "lssa", "lssar")]
    report = eval_length.main(runs + ["--multipliers", "1", "2", "4", "--tokens", "4096", "--out", str(out)])
    return report, out


def test_one_x_loss_equals_forward_loss(sweep, trained_runs, synth_dir):
    report, _ = sweep
    for run in report["runs"]:
        model, _ = load_model(run["checkpoint"])
        windows = torch.from_numpy(val_windows(load_tokens(synth_dir, "val"), 32, 4096 // 32))
        with torch.no_grad():
            _, loss = model(windows[:, :-1], windows[:, 1:])
        one_x = next(r for r in run["results"] if r["length"] == 32)
        assert one_x["loss"] == pytest.approx(loss.item(), rel=1e-5)


def test_every_length_gets_the_same_tokens_and_schema(sweep):
    report, out = sweep
    assert {"created", "command", "code", "hardware", "runs"} <= set(report)
    for run in report["runs"]:
        assert {"checkpoint", "step", "trained_attention", "attention", "overrides", "train_context",
                "tokens_per_length", "results", "config", "model_config"} <= set(run)
        assert run["step"] == 30 and run["train_context"] == 32 and run["overrides"] == {}
        assert set(run["training"]) == {"train_loss", "val_loss"}
        assert [r["length"] for r in run["results"]] == [32, 64, 128]
        assert {r["tokens"] for r in run["results"]} == {4096}
        assert [r["windows"] for r in run["results"]] == [128, 64, 32]
        for r in run["results"]:
            buckets = r["buckets"]
            assert len(buckets) == r["length"] // 32 and buckets[-1]["end"] == r["length"]
            # the all-position mean is the mean of equal-sized buckets
            assert r["loss"] == pytest.approx(sum(b["loss"] for b in buckets) / len(buckets), rel=1e-9)
    assert json.load(open(out)) == json.loads(json.dumps(report))
    rows = list(csv.DictReader(open(str(out).replace(".json", ".csv"))))
    assert len(rows) == 9 and rows[0]["loss"] and rows[0]["multiplier"] == "1.0"


def test_attention_override_is_recorded(trained_runs):
    report = eval_length.main([trained_runs["lssa"], "--attention", "lssar", "--p", "3", "--multipliers", "1", "2",
                               "--tokens", "2048"])
    run = report["runs"][0]
    assert run["trained_attention"] == "lssa" and run["attention"] == "lssar" and run["reweight_p"] == 3.0
    assert run["overrides"] == {"attention": "lssar", "reweight_p": 3.0}
    plain = eval_length.main([trained_runs["lssa"], "--multipliers", "1", "--tokens", "2048"])
    assert plain["runs"][0]["results"][0]["loss"] != run["results"][0]["loss"]


def test_validation_too_short_is_a_clear_error(trained_runs):
    with pytest.raises(ShardError, match=r"validation set has 20,000 tokens; a window of 32,768 needs 32,769"):
        eval_length.main([trained_runs["softmax"], "--lengths", "32768"])
    with pytest.raises(ShardError, match=r"--tokens 50,000 is more than the validation set holds"):
        eval_length.main([trained_runs["softmax"], "--tokens", "50000"])
    # without --tokens the budget is capped to what the set holds, the same at every length
    report = eval_length.main([trained_runs["softmax"], "--multipliers", "1", "16"])
    assert report["runs"][0]["tokens_per_length"] == 19_968  # the largest multiple of 512 below 20,000
    proc = subprocess.run([sys.executable, "eval_length.py", trained_runs["softmax"], "--lengths", "65536"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("error: validation set has")
    proc = subprocess.run([sys.executable, "eval_length.py", trained_runs["softmax"], "--multipliers", "0"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--multipliers: must be a positive integer, got 0" in proc.stderr


def test_too_small_a_token_budget_says_what_was_asked_and_what_the_split_holds():
    with pytest.raises(ShardError, match=r"^--tokens 10 is too few: lengths 64, 128 need a token budget that is a "
                                         r"multiple of 128 \(every length sees the same tokens\), and the validation "
                                         r"split holds 20,000 tokens; ask for --tokens 128 or more$"):
        eval_length.token_budget(10, [64, 128], 20_000)
    with pytest.raises(ShardError, match=r"^lengths 96, 128 need .* multiple of 384 .* holds 300 tokens; use lengths "
                                         r"that divide each other \(e.g. --multipliers 1 2 4 8 16\)$"):
        eval_length.token_budget(None, [96, 128], 300)
    with pytest.raises(ShardError, match=r"^--tokens 200 is too few: .* multiple of 384 .* holds 300 tokens; use "
                                         r"lengths that divide"):
        eval_length.token_budget(200, [96, 128], 300)  # 384 > the 299 usable: asking for more cannot help
    with pytest.raises(ShardError, match=r"holds 129 tokens; ask for --tokens 128 or more$"):
        eval_length.token_budget(10, [64, 128], 129)  # 128 usable: exactly one multiple fits
    assert eval_length.token_budget(384, [96, 128], 385) == 384  # exactly enough
    with pytest.raises(ShardError, match=r"^--tokens 385 is more than the validation set holds \(385 tokens\); ask "
                                         r"for 384 or fewer$"):
        eval_length.token_budget(385, [96, 128], 385)
    with pytest.raises(ShardError, match=r"^validation set has 128 tokens; a window of 128 needs 129; use shorter"):
        eval_length.token_budget(None, [128], 128)
    assert eval_length.token_budget(128, [64, 128], 20_000) == 128


def test_validation_token_outside_the_vocabulary_is_a_clear_error(trained_runs, tmp_path):
    from data.shards import write_shard
    write_shard(tmp_path / "x_val_000000.bin", [1, 2, 60000, 3] * 100)
    with pytest.raises(ShardError, match=r"x_val_000000.bin: token id 60000 is not below vocab_size .*at token 2\)"):
        eval_length.main([trained_runs["softmax"], "--data_dir", str(tmp_path), "--lengths", "32"])


def test_plot_is_written(sweep, tmp_path):
    _, out = sweep
    png = tmp_path / "sweep.png"
    subprocess.run([sys.executable, "scripts/plot_length.py", str(out), "-o", str(png)], cwd=ROOT, check=True,
                   capture_output=True)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    passkey = tmp_path / "passkey.json"  # the sibling's results (eval_passkey.py's schema): refused
    passkey.write_text(json.dumps({"runs": [{"label": "x", "results": [{"length": 64, "accuracy": 0.5}]}]}))
    proc = subprocess.run([sys.executable, "scripts/plot_length.py", passkey, "-o", str(tmp_path / "x.png")],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "not an eval_length.py result" in proc.stderr and "plot_passkey.py" in proc.stderr


def test_sample_generates_past_the_training_context(gpt2_vocab_run):
    proc = subprocess.run([sys.executable, "scripts/sample.py", gpt2_vocab_run, "--tokens", "40", "--prompt", "Hello",
                           "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "trained at 32 tokens" in proc.stderr and "1.3x the training context" in proc.stderr
    assert proc.stdout.startswith("Hello") and len(proc.stdout) > len("Hello")


@pytest.mark.parametrize("option, value, message", [
    ("--tokens", "0", "--tokens must be a positive number of tokens to generate, got 0"),
    ("--tokens", "-5", "--tokens must be a positive number of tokens to generate, got -5"),
    ("--temperature", "-0.5", "--temperature must be >= 0 (0: greedy), got -0.5"),
    ("--top_k", "0", "--top_k must be a positive number of candidate tokens, got 0"),
    ("--samples", "0", "--samples must be a positive number, got 0")])
def test_sample_bad_options_are_one_line(option, value, message):
    import runpy
    argv = sys.argv
    sys.argv = ["sample.py", "no-such-run", option, value]
    try:   # checked before anything is loaded: the checkpoint need not exist
        with pytest.raises(SystemExit) as exit:
            runpy.run_path(os.path.join(ROOT, "scripts", "sample.py"), run_name="__main__")
    finally:
        sys.argv = argv
    assert str(exit.value) == f"error: {message}"


def test_sample_refuses_a_non_gpt2_vocabulary(trained_runs):
    proc = subprocess.run([sys.executable, "scripts/sample.py", trained_runs["lssar"], "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "not trained on gpt2 tokens" in proc.stderr


def test_plot_legend_shows_what_differs_and_the_title_what_is_shared():
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from plot_length import legend

    def run(name, attention, p=15.0, trained=None):
        return {"run": name, "attention": attention, "reweight_p": p, "trained_attention": trained or attention,
                "overrides": {"attention": attention} if trained else {}}
    runs = [run("small-cpu-softmax", "softmax"), run("small-cpu-lssar", "lssar"),
            run("small-cpu-lssar-p3", "lssar", 3.0), run("small-cpu-lssa", "lssar", trained="lssa")]
    assert legend(runs, "sweep") == (["softmax", "lssar p=15", "lssar p=3", "lssar p=15 (trained lssa)"],
                                     "small-cpu: sweep")
    assert legend(runs, "small-cpu: four runs")[1] == "small-cpu: four runs"  # a title that names them already
    # runs the attention alone does not tell apart keep the part of their name that differs
    twins = [run("cpu-a-softmax", "softmax"), run("cpu-b-softmax", "softmax"), run("cpu-b-lssa", "lssa")]
    assert legend(twins, "t") == (["softmax, a-softmax", "softmax, b-softmax", "lssa"], "cpu: t")
    assert legend([run("demo-lssa", "lssa")], "t") == (["lssa"], "demo-lssa: t")
