"""eval_length.py's sweep against losses worked out here, token by token, from the validation
stream itself: every length scores the same tokens (tokens[1 : budget + 1]), every batch counts,
and each position bucket holds the positions it names. A small untrained model saved as a
checkpoint, so it runs in seconds (tests/test_eval.py covers the sweep on trained runs)."""
import csv
import json
import os

import numpy as np
import pytest
import torch

import eval_length
from checkpoint import save_checkpoint
from data.catalog import shards_tokenizer
from data.shards import load_tokens
from model import GPT, GPTConfig

from helpers import VOCAB

CONTEXT = 8


@pytest.fixture(scope="module")
def run_dir(synth_dir, tmp_path_factory):
    """A one-layer model (context 8) saved as step 3 of a run, with a metrics.jsonl."""
    torch.manual_seed(0)
    config = dict(n_layer=1, n_head=2, n_embd=16, block_size=CONTEXT, vocab_size=VOCAB, attention="lssar")
    model = GPT(GPTConfig(**config))
    with torch.no_grad():  # sharper than N(0, 0.02), so the losses vary by position and token
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(20)
    run = tmp_path_factory.mktemp("sweep") / "tiny-lssar"
    run.mkdir()
    cfg = {"data_dir": synth_dir, "dataset": "synth", "tokenizer": shards_tokenizer(synth_dir)[0], "seed": 1}
    save_checkpoint({"model": model.state_dict(), "model_config": config, "config": cfg, "step": 3}, str(run), 3)
    with open(run / "metrics.jsonl", "w") as f:
        for r in ({"step": 0, "val_loss": 9.0}, {"step": 2, "loss": 8.0}, {"step": 3, "loss": 7.0},
                  {"step": 3, "val_loss": 7.5}, {"step": 4, "loss": 6.0}):
            f.write(json.dumps(r) + "\n")
    return str(run), model.eval()


def losses_by_hand(model, tokens, length, budget):
    """Per-position losses (windows, length) of the budget's tokens cut into windows of `length`,
    each scored with full forward passes (not token_losses)."""
    rows = [np.asarray(tokens[s:s + length + 1], dtype=np.int64) for s in range(0, budget, length)]
    x = torch.from_numpy(np.stack(rows))
    with torch.no_grad():
        logits, _ = model(x[:, :-1], x[:, 1:])
        return -logits.double().log_softmax(-1).gather(2, x[:, 1:, None]).squeeze(2)


@pytest.mark.parametrize("batch_tokens", [40, 4096])  # several batches per length, and one
def test_every_length_scores_the_same_tokens_and_every_batch_counts(run_dir, synth_dir, tmp_path, batch_tokens):
    path, model = run_dir
    out = tmp_path / "sweep.json"
    report = eval_length.main([path, "--multipliers", "1", "2", "16", "--tokens", "1000", "--bucket", "4",
                               "--batch_tokens", str(batch_tokens), "--out", str(out)])
    tokens = load_tokens(synth_dir, "val")
    budget = 896  # the largest multiple of lcm(8, 16, 128) in 1000
    run = report["runs"][0]
    assert run["tokens_per_length"] == budget
    for r, length in zip(run["results"], (8, 16, 128)):
        by_hand = losses_by_hand(model, tokens, length, budget)
        assert r["length"] == length and r["tokens"] == budget and r["windows"] == budget // length
        assert r["loss"] == pytest.approx(by_hand.mean().item(), rel=1e-5)
        # bucket b: positions [4b, 4b + 4) of every window
        assert [(b["start"], b["end"]) for b in r["buckets"]] == [(s, s + 4) for s in range(0, length, 4)]
        assert [b["loss"] for b in r["buckets"]] == pytest.approx(
            [by_hand[:, s:s + 4].mean().item() for s in range(0, length, 4)], rel=1e-5)
    # the 1x and 16x means differ only by the context each token sees; the tokens are the same
    assert run["results"][0]["loss"] != run["results"][2]["loss"]
    rows = list(csv.DictReader(open(tmp_path / "sweep.csv")))
    assert [(int(r["length"]), float(r["multiplier"])) for r in rows] == [(8, 1.0), (16, 2.0), (128, 16.0)]
    assert [float(r["loss"]) for r in rows] == pytest.approx([r["loss"] for r in run["results"]], abs=1e-6)
    assert json.load(open(out))["runs"][0]["results"] == run["results"]


def test_last_bucket_may_be_partial(run_dir, synth_dir):
    path, model = run_dir
    report = eval_length.main([path, "--lengths", "10", "--tokens", "100", "--bucket", "4"])
    r = report["runs"][0]["results"][0]
    by_hand = losses_by_hand(model, load_tokens(synth_dir, "val"), 10, 100)
    assert [(b["start"], b["end"]) for b in r["buckets"]] == [(0, 4), (4, 8), (8, 10)]
    assert r["buckets"][2]["loss"] == pytest.approx(by_hand[:, 8:].mean().item(), rel=1e-5)
    assert r["loss"] == pytest.approx(by_hand.mean().item(), rel=1e-5)


def test_record_names_the_run_and_its_last_losses(run_dir):
    path, _ = run_dir
    report = eval_length.main([path, "--multipliers", "1", "--tokens", "64"])
    run = report["runs"][0]
    assert run["run"] == "tiny-lssar" and run["step"] == 3 and run["train_context"] == CONTEXT
    assert run["label"] == "tiny-lssar [lssar p=15]"
    assert run["training"] == {"train_loss": 7.0, "val_loss": 7.5}  # up to the checkpoint's step, not after
    assert run["attention"] == run["trained_attention"] == "lssar" and run["overrides"] == {}
    assert run["data_dir"] == run["config"]["data_dir"]
    assert report["command"].startswith("python eval_length.py " + path)
    assert eval_length.final_losses(os.path.dirname(path), 3) == {}  # no metrics.jsonl: nothing to show


def test_token_budget_rounds_down_to_a_multiple_of_every_length():
    assert eval_length.token_budget(None, [8, 16, 128], 20_000) == 19_968
    assert eval_length.token_budget(None, [3, 4], 10 ** 9) == eval_length.DEFAULT_TOKENS // 12 * 12
    assert eval_length.token_budget(1000, [8, 12], 2000) == 984  # lcm 24
    assert eval_length.token_budget(128, [128], 129) == 128  # the last window's target is the 129th token
    with pytest.raises(Exception, match="a window of 128 needs 129"):
        eval_length.token_budget(None, [128], 128)


def test_print_table(run_dir, capsys):
    path, _ = run_dir
    report = eval_length.main([path, "--multipliers", "1", "4", "--tokens", "64"])
    lines = capsys.readouterr().out.splitlines()
    head = lines.index(next(line for line in lines if line.startswith("run [attention]")))
    assert lines[head].split()[-2:] == ["1x", "4x"]
    assert lines[head + 2].split()[-2:] == [f"{r['loss']:.4f}" for r in report["runs"][0]["results"]]


def test_command_line_defaults_and_checks(capsys):
    args = eval_length.parse_args(["out/run"])
    assert args.multipliers == [1, 2, 4, 8, 16] and args.lengths is None and args.bucket is None
    assert args.tokens is None and args.batch_tokens is None and args.device == "auto"
    args = eval_length.parse_args(["a", "b", "--p", "3", "--attention", "lssar", "--lengths", "64", "128"])
    assert args.checkpoints == ["a", "b"] and args.p == 3.0 and isinstance(args.p, float)
    assert args.lengths == [64, 128] and args.attention == "lssar"
    for bad, message in ((["--multipliers", "0"], "--multipliers: must be a positive integer, got 0"),
                         (["--attention", "flash"], "--attention: invalid choice: 'flash'"),
                         (["--tokens", "-5"], "--tokens: must be a positive integer, got -5")):
        with pytest.raises(SystemExit):
            eval_length.parse_args(["out/run", *bad])
        assert message in capsys.readouterr().err


def test_csv_header_and_where_it_says_it_wrote(run_dir, tmp_path, capsys):
    path, _ = run_dir
    eval_length.main([path, "--multipliers", "1", "--tokens", "64", "--out", str(tmp_path / "r.json")])
    assert f"wrote {tmp_path / 'r'}.csv" in capsys.readouterr().out
    header = open(tmp_path / "r.csv").readline().strip().split(",")
    assert header == ["run", "trained_attention", "attention", "reweight_p", "step", "train_context", "length",
                      "multiplier", "loss", "tokens", "windows", "time_s"]
    row = next(csv.DictReader(open(tmp_path / "r.csv")))
    assert row["run"] == "tiny-lssar" and row["step"] == "3" and row["train_context"] == str(CONTEXT)
    assert row["trained_attention"] == row["attention"] == "lssar" and float(row["reweight_p"]) == 15.0
    assert int(row["tokens"]) == 64 and int(row["windows"]) == 8 and float(row["time_s"]) >= 0


def test_report_header_and_overrides(run_dir, capsys):
    path, _ = run_dir
    report = eval_length.main([path, "--multipliers", "1", "--tokens", "64", "--attention", "lssar", "--p", "3",
                               "--attention_backend", "reference"])
    assert report["created"].endswith("+00:00")  # UTC
    assert {"commit", "dirty"} <= set(report["code"]) and report["hardware"]["device"] == "cpu"
    run = report["runs"][0]
    assert run["overrides"] == {"attention": "lssar", "reweight_p": 3.0, "attention_backend": "reference"}
    assert run["label"] == "tiny-lssar [lssar p=3]" and run["reweight_p"] == 3.0
    assert run["checkpoint"] == os.path.join(path, "ckpt_000003.pt") and run["model_config"]["block_size"] == CONTEXT
    out = capsys.readouterr().out
    assert f"evaluating lssar p=3 on 64 validation tokens per length from {run['data_dir']}" in out


def test_data_dir_option_is_used(run_dir, synth_dir, tmp_path):
    from data.shards import write_shard
    path, model = run_dir
    other = tmp_path / "other"
    other.mkdir()
    tokens = np.asarray(load_tokens(synth_dir, "val")[::-1][:200])  # other tokens, same vocabulary
    write_shard(other / "other_val_000000.bin", tokens)
    run = eval_length.main([path, "--lengths", "8", "--tokens", "64", "--data_dir", str(other)])["runs"][0]
    assert run["data_dir"] == str(other)
    assert run["results"][0]["loss"] == pytest.approx(losses_by_hand(model, tokens, 8, 64).mean().item(), rel=1e-5)


def test_checkpoints_share_one_load_of_the_validation_tokens(run_dir, monkeypatch):
    path, _ = run_dir
    loads, batch_tokens, real_load, real_sweep = [], [], eval_length.load_tokens, eval_length.sweep_one
    monkeypatch.setattr(eval_length, "load_tokens", lambda *a: loads.append(a) or real_load(*a))
    monkeypatch.setattr(eval_length, "sweep_one", lambda *a: batch_tokens.append(a[5]) or real_sweep(*a))
    eval_length.main([path, path, "--multipliers", "1", "--tokens", "64"])
    assert len(loads) == 1 and loads[0][1:] == ("val", VOCAB)  # checked against the model's vocabulary
    assert batch_tokens == [8192, 8192]  # the CPU default


def test_validation_tokens_default_and_errors(synth_dir, tmp_path):
    from configurator import REPO_ROOT
    from data.shards import ShardError
    ckpt = {"config": {"dataset": "no-such-dataset", "tokenizer": "gpt2"}, "model_config": {"vocab_size": VOCAB},
            "path": "x/ckpt_000001.pt"}
    with pytest.raises(ShardError, match=os.path.join(REPO_ROOT, "data", "no-such-dataset")):
        eval_length.validation_tokens(ckpt)
    ckpt["config"]["tokenizer"] = "bytes"
    with pytest.raises(ShardError, match=f"^x/ckpt_000001.pt was trained on bytes tokens but {synth_dir} holds gpt2 "
                                         f"tokens; pass --data_dir with bytes shards"):
        eval_length.validation_tokens(ckpt, synth_dir)
    ckpt["config"]["tokenizer"] = "gpt2"
    ckpt["model_config"]["vocab_size"] = 50  # the synthetic tokens go up to 96
    with pytest.raises(ShardError, match="is not below vocab_size 50"):
        eval_length.validation_tokens(ckpt, synth_dir)
    cache = {}
    ckpt["model_config"]["vocab_size"] = VOCAB
    data_dir, tokens = eval_length.validation_tokens(ckpt, synth_dir, cache)
    assert data_dir == synth_dir and cache == {(synth_dir, VOCAB): tokens}


def test_print_table_leaves_missing_lengths_blank(capsys):
    runs = [{"label": "a", "train_context": 8, "results": [{"length": 8, "loss": 1.0}, {"length": 16, "loss": 2.0}]},
            {"label": "b", "train_context": 8, "results": [{"length": 8, "loss": 3.0}]}]
    eval_length.print_table({"runs": runs})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{'run [attention]':<36}{'1x':>9}{'2x':>9}" and lines[1] == "-" * len(lines[0])
    assert lines[2] == f"{'a':<36}{'1.0000':>9}{'2.0000':>9}"
    assert lines[3] == f"{'b':<36}{'3.0000':>9}{'':>9}"


@pytest.mark.parametrize("gpu", [False, True])
def test_what_a_gpu_and_a_cpu_each_get(monkeypatch, gpu):
    """A GPU (a stand-in device name) sweeps under bf16 autocast in batches of 131,072 tokens and
    leaves glibc's memory alone; the CPU sweeps without autocast, 8,192 tokens a batch, and keeps
    freed memory for reuse (~2x there); --batch_tokens wins over both."""
    import warnings
    device = "cuda" if gpu else "cpu"
    kept = []
    monkeypatch.setattr(eval_length, "pick_device", lambda name: device)
    monkeypatch.setattr(eval_length, "hardware", lambda d: {"device": d})
    monkeypatch.setattr(eval_length, "keep_freed_memory", lambda: kept.append(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.autocast("cuda") on a machine without CUDA warns that it is off
        _, got, autocast, batch_tokens, report = eval_length.start_sweep(eval_length.parse_args(["run"]), "x.py", ["run"])
        given = eval_length.start_sweep(eval_length.parse_args(["run", "--batch_tokens", "96"]), "x.py", [])[3]
    assert got == device and report["hardware"] == {"device": device} and kept == ([] if gpu else [1, 1])
    assert batch_tokens == (131072 if gpu else 8192) and given == 96
    if gpu:
        assert (autocast.device, autocast.fast_dtype) == ("cuda", torch.bfloat16)
    else:
        assert not isinstance(autocast, torch.autocast)


def test_each_checkpoint_is_loaded_onto_the_chosen_device(monkeypatch):
    """--device reaches load_model (a stand-in that records it and stops there): a GPU sweep must
    not evaluate a model left on the CPU."""
    loaded = []

    def load_model(path, device="cpu", **overrides):
        loaded.append((path, device))
        raise KeyboardInterrupt   # what was asked is recorded: nothing more to run

    monkeypatch.setattr(eval_length, "pick_device", lambda name: "cuda:1")
    monkeypatch.setattr(eval_length, "hardware", lambda d: {"device": d})
    monkeypatch.setattr(eval_length, "load_model", load_model)
    with pytest.raises(KeyboardInterrupt):
        eval_length.main(["some/run", "--device", "cuda:1"])
    assert loaded == [("some/run", "cuda:1")]
