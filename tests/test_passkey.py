"""eval_passkey.py: prompts of exact length with the key at the right depth, scoring, the run."""
import json
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest
import torch

import eval_passkey
from attention import describe
from checkpoint import load_checkpoint
from data.tokenizer import get_encoding
from runinfo import hardware

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def enc():
    return get_encoding()


def key_position(enc, tokens):
    text = enc.decode(tokens)
    return text.index("The pass key is 12345."), text


@pytest.mark.parametrize("length", [96, 257, 1024])
def test_prompt_has_exact_length_and_the_key_at_its_depth(enc, length):
    positions = []
    for depth in (0.0, 0.25, 0.5, 0.75, 1.0):
        tokens = eval_passkey.build_prompt(enc, length, depth, "12345")
        assert len(tokens) == length
        pos, text = key_position(enc, tokens)
        assert text.count("12345") == 2 and text.endswith("What is the pass key? The pass key is")
        positions.append(pos)
    assert positions == sorted(positions) and positions[0] < positions[-1]
    start = eval_passkey.build_prompt(enc, length, 0.0, "12345")
    assert enc.decode(start[1:]).startswith(eval_passkey.INTRO + " The pass key is 12345.")
    # the filler is cut at sentence boundaries around the key line
    middle = eval_passkey.build_prompt(enc, length, 0.5, "12345")
    _, text = key_position(enc, middle)
    assert re.search(r"again\. The pass key is 12345\. Remember it\. 12345 is the pass key\. The grass", text)
    # and the pieces join into the tokens running text has: no lone spaces
    assert enc.encode(" ")[0] not in middle[1:-len(enc.encode(eval_passkey.QUESTION))]


def test_prompt_too_short_is_an_error(enc):
    with pytest.raises(ValueError, match="needs at least"):
        eval_passkey.build_prompt(enc, 20, 0.5, "12345")


def test_answer_parsing(enc):
    assert eval_passkey.answer_of(enc, enc.encode(" 71432. Remember")) == "71432"
    assert eval_passkey.answer_of(enc, enc.encode(" seven")) == ""
    assert eval_passkey.answer_of(enc, enc.encode(" 714329")) == "714329"  # one digit too many is wrong


class Oracle:
    """A stand-in model that reads the key from the prompt and answers it (or a wrong one)."""

    def __init__(self, enc, wrong=False):
        self.enc, self.wrong = enc, wrong

    def generate(self, idx, max_new_tokens, temperature):
        assert temperature == 0  # greedy decoding
        rows = []
        for row in idx.tolist():
            key = re.search(r"pass key is (\d+)", self.enc.decode(row)).group(1)
            answer = self.enc.encode(" " + (key[::-1] if self.wrong else key) + ".")
            rows.append(row + (answer + [13] * max_new_tokens)[:max_new_tokens])
        return torch.tensor(rows)


def test_depth_cells_and_seeded_trials():
    assert eval_passkey.depth_cells([0.0, 0.5, 1.0]) == [(0.0, 0.25), (0.25, 0.75), (0.75, 1.0)]
    assert eval_passkey.depth_cells([0.5]) == [(0.0, 1.0)]
    with pytest.raises(ValueError, match="distinct numbers in \\[0, 1\\]"):
        eval_passkey.depth_cells([0.5, 1.5])
    trials = eval_passkey.draw_trials(0, 256, (0.25, 0.75), 50)
    assert trials == eval_passkey.draw_trials(0, 256, (0.25, 0.75), 50)  # the same for every checkpoint
    assert trials != eval_passkey.draw_trials(1, 256, (0.25, 0.75), 50)
    assert trials != eval_passkey.draw_trials(0, 512, (0.25, 0.75), 50)
    keys, depths = zip(*trials)
    assert all(len(k) == 5 and k.isdigit() for k in keys) and len(set(keys)) > 40
    assert all(0.25 <= d <= 0.75 for d in depths) and max(depths) - min(depths) > 0.3  # random, within the cell


def test_scoring_with_an_oracle(enc):
    keys = [("12345", 0.1), ("67890", 0.5), ("24680", 0.9)]
    args = (enc, 128, keys, "cpu", torch.autocast("cpu", enabled=False), 2)
    assert eval_passkey.run_trials(Oracle(enc), *args) == 3
    assert eval_passkey.run_trials(Oracle(enc, wrong=True), *args) == 0


def test_run_on_a_checkpoint(gpt2_vocab_run, tmp_path):
    out = tmp_path / "passkey.json"
    argv = [gpt2_vocab_run, "--lengths", "96", "128", "--depths", "0", "1", "--trials", "3", "--out", str(out)]
    report = eval_passkey.main(argv)
    assert report == json.load(open(out))
    run = report["runs"][0]
    assert run["train_context"] == 32 and run["trained_attention"] == "lssar" and run["overrides"] == {}
    assert [(r["length"], r["depth"], r["depth_range"], r["trials"]) for r in run["results"]] == [
        (96, 0.0, [0.0, 0.5], 3), (96, 1.0, [0.5, 1.0], 3), (128, 0.0, [0.0, 0.5], 3), (128, 1.0, [0.5, 1.0], 3)]
    assert set(run["accuracy_by_length"]) == {"96", "128"}
    again = eval_passkey.main(argv[:-2])  # deterministic: the same prompts, the same greedy answers
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in run["results"]]
    assert [{k: v for k, v in r.items() if k != "time_s"} for r in again["runs"][0]["results"]] == strip
    override = eval_passkey.main([gpt2_vocab_run, "--lengths", "96", "--depths", "0.5", "--trials", "1",
                                  "--attention", "lssa"])
    assert override["runs"][0]["attention"] == "lssa" and override["runs"][0]["overrides"] == {"attention": "lssa"}
    power = eval_passkey.main([gpt2_vocab_run, "--lengths", "96", "--depths", "0.5", "--trials", "1",
                               "--attention", "lssar", "--p", "3"])
    assert power["runs"][0]["reweight_p"] == 3.0 and power["runs"][0]["overrides"] == {"attention": "lssar",
                                                                                       "reweight_p": 3.0}
    assert set(report) == {"created", "command", "code", "hardware", "trials", "seed", "runs"}
    assert report["command"] == "python eval_passkey.py " + " ".join(argv) and report["trials"] == 3
    assert datetime.fromisoformat(report["created"]).tzinfo is not None
    png = tmp_path / "passkey.png"
    subprocess.run([sys.executable, "scripts/plot_passkey.py", str(out), "-o", str(png)], cwd=ROOT, check=True,
                   capture_output=True)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_run_defaults_and_what_reaches_the_trials(gpt2_vocab_run, monkeypatch, capsys):
    """Without --lengths: 1, 2, 4 and 8 times the training context (32). The seed, length and cell
    reach the trial draw; the device and the CPU batch of 4 reach the run; the label names the
    attention the model runs with."""
    drawn, ran = [], []  # recorded, not run: 32 tokens are too few for a prompt; one key of four found
    monkeypatch.setattr(eval_passkey, "draw_trials", lambda *a: drawn.append(a) or [None] * a[3])
    monkeypatch.setattr(eval_passkey, "run_trials", lambda *a: ran.append((a[2], a[4], a[6])) or 1)
    report = eval_passkey.main([gpt2_vocab_run, "--depths", "0.5", "--trials", "4", "--seed", "7"])
    assert [d[:2] for d in drawn] == [(7, 32), (7, 64), (7, 128), (7, 256)] and drawn[0][2:] == ((0.0, 1.0), 4)
    assert ran == [(32, "cpu", 4), (64, "cpu", 4), (128, "cpu", 4), (256, "cpu", 4)]
    run = report["runs"][0]
    assert [r["accuracy"] for r in run["results"]] == [0.25] * 4 and run["accuracy_by_length"]["256"] == 0.25
    # seconds per cell, to 1/100: the stand-in trials take none
    assert all(isinstance(r["time_s"], float) and 0 <= r["time_s"] < 1 for r in run["results"])
    ckpt = load_checkpoint(gpt2_vocab_run)
    assert run["checkpoint"] == ckpt["path"] and run["step"] == ckpt["step"]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"  {run['label']:<30} L={32:>6} depth=0.00-1.00  1/4"
    assert printed[-1] == f"{run['label']}: accuracy by length 32: 25%, 64: 25%, 128: 25%, 256: 25%"
    assert report["runs"][0]["label"] == f"lssar [{describe('lssar', 15.0)}]"
    assert report["hardware"] == hardware("cpu") and report["seed"] == 7 and set(report["code"]) == {"commit", "dirty"}


def test_only_gpt2_token_models_are_run(gpt2_vocab_run, monkeypatch):
    load = eval_passkey.load_model

    def as_bytes(*a, **kw):
        model, ckpt = load(*a, **kw)
        ckpt["config"]["tokenizer"] = "bytes"
        return model, ckpt
    monkeypatch.setattr(eval_passkey, "load_model", as_bytes)
    argv = [gpt2_vocab_run, "--lengths", "96", "--depths", "0.5", "--trials", "1"]
    with pytest.raises(SystemExit, match=r"ckpt_\d+\.pt: trained on bytes tokens; the passkey test is built for GPT-2 "
                                         r"tokens \(train on GPT-2 shards, e.g. config/small_gpu.py\)$"):
        eval_passkey.main(argv)

    def vocabulary(size):
        def load_with(*a, **kw):
            model, ckpt = load(*a, **kw)
            model.config.vocab_size = size
            return model, ckpt
        return load_with
    monkeypatch.setattr(eval_passkey, "load_model", vocabulary(get_encoding().n_vocab))  # exactly GPT-2's: fine
    eval_passkey.main(argv)
    monkeypatch.setattr(eval_passkey, "load_model", vocabulary(get_encoding().n_vocab - 1))
    with pytest.raises(SystemExit, match=rf"ckpt_\d+\.pt: vocabulary of {get_encoding().n_vocab - 1} tokens is not "
                                         r"GPT-2's$"):
        eval_passkey.main(argv)


def test_the_command_line_types_and_choices():
    args = eval_passkey.parse_args(["ckpt", "--seed", "7", "--p", "3", "--batch", "2", "--attention", "lssar"])
    assert (args.seed, args.p, args.batch, args.attention) == (7, 3.0, 2, "lssar")
    assert isinstance(args.seed, int) and isinstance(args.p, float) and isinstance(args.batch, int)
    with pytest.raises(SystemExit):
        eval_passkey.parse_args(["ckpt", "--attention", "flash"])  # not an attention type


@pytest.mark.parametrize("gpu", [False, True])
def test_what_a_gpu_and_a_cpu_each_get(gpt2_vocab_run, monkeypatch, gpu):
    """On a GPU (a stand-in device name: the model itself stays on the CPU) the checkpoint is loaded
    onto it, the trials run there under bf16 autocast 16 prompts at a time, and glibc's memory is
    left alone; on the CPU, no autocast, 4 at a time, and freed memory kept for reuse (~2x there)."""
    import warnings
    device = "cuda" if gpu else "cpu"
    kept, loaded, ran = [], [], []
    monkeypatch.setattr(eval_passkey, "pick_device", lambda name: device)
    monkeypatch.setattr(eval_passkey, "hardware", lambda d: {"device": d})
    monkeypatch.setattr(eval_passkey, "keep_freed_memory", lambda: kept.append(1))
    real_load = eval_passkey.load_model
    monkeypatch.setattr(eval_passkey, "load_model", lambda path, *a, **kw: loaded.append(a) or real_load(path, "cpu", **kw))
    monkeypatch.setattr(eval_passkey, "draw_trials", lambda *a: [None] * a[3])
    monkeypatch.setattr(eval_passkey, "run_trials", lambda *a: ran.append((a[4], a[5], a[6])) or 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.autocast("cuda") on a machine without CUDA warns that it is off
        eval_passkey.main([gpt2_vocab_run, "--lengths", "32", "--depths", "0.5", "--trials", "2"])
    assert loaded == [(device,)] and kept == ([] if gpu else [1])
    (where, autocast, batch), = ran
    assert where == device and batch == (16 if gpu else 4)
    if gpu:
        assert (autocast.device, autocast.fast_dtype) == ("cuda", torch.bfloat16)
    else:
        assert not isinstance(autocast, torch.autocast)
