"""The byte-level path end to end: prepare --tokenizer bytes -> train -> sweep -> sample, and the
errors for a config or checkpoint that does not fit the shards."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import eval_length
import eval_passkey
import train
from checkpoint import load_checkpoint, tokenizer_of
from configurator import ConfigError
from data import prepare
from data.catalog import prepare_command, shards_tokenizer
from data.shards import ShardError, list_shards, read_shard
from data.tokenizer import EOT, get_encoding, load_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog, café {i * i}. " * 30 for i in range(12)]


def tiny_bytes_args(data_dir, out_dir, *extra):
    # no vocab_size: the model takes the shards' (256)
    return ["config/demo_cpu.py", f"--data_dir={data_dir}", f"--out_dir={out_dir}", "--model=tiny",
            "--block_size=32", "--batch_size=8", "--eval_iters=2", "--eval_interval=100", *extra]


@pytest.fixture(scope="module")
def bytes_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("bytes")
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in DOCS))
    out = root / "shards"
    prepare.main(["openwebtext", "--source", str(src), "--out-dir", str(out), "--val-every", "4", "--workers", "1",
                  "--tokenizer", "bytes"])
    return str(out)


@pytest.fixture(scope="module")
def bytes_run(bytes_dir, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("bytes-run") / "lssar")
    train.main(tiny_bytes_args(bytes_dir, run, "--max_iters=10", "--attention=lssar"))
    return run


def test_tokenizers():
    tok = load_tokenizer("bytes")
    assert (tok.name, tok.vocab_size, tok.eot) == ("bytes", 256, 0)
    assert tok.encode("héllo") == list("héllo".encode()) and tok.decode(tok.encode("héllo")) == "héllo"
    assert tok.decode([104, 0xC3]) == "h\ufffd"  # a cut character decodes, replaced
    gpt2 = load_tokenizer("gpt2")
    assert (gpt2.name, gpt2.vocab_size, gpt2.eot) == ("gpt2", 50257, EOT)
    assert gpt2.encode("Hello <|endoftext|>") == get_encoding().encode_ordinary("Hello <|endoftext|>")
    assert gpt2.decode(gpt2.encode("Hello world")) == "Hello world"
    with pytest.raises(ValueError, match="unknown tokenizer 'chars'; known: gpt2, bytes"):
        load_tokenizer("chars")


def test_prepare_bytes(bytes_dir, tmp_path):
    with open(os.path.join(bytes_dir, "meta.json")) as f:
        meta = json.load(f)
    assert (meta["tokenizer"], meta["vocab_size"], meta["separator"]) == ("bytes", 256, 0)
    assert shards_tokenizer(bytes_dir) == ("bytes", 256)
    val = read_shard(list_shards(bytes_dir, "val")[0])
    expected = b"".join(b"\0" + d.encode() for d in DOCS[::4])  # NUL before every document, then its UTF-8
    assert val.tobytes() == np.frombuffer(expected, np.uint8).astype("<u2").tobytes()
    assert "--tokenizer bytes" in prepare_command(bytes_dir)
    assert prepare_command(os.path.join(ROOT, "data", "embedded-bytes")).endswith("prepare.py embedded --tokenizer bytes")
    nul = tmp_path / "nul.jsonl"
    nul.write_text(json.dumps({"text": "a\0b"}) + "\n")
    with pytest.raises(SystemExit, match="holds a NUL byte, the byte-level document separator"):
        prepare.main(["openwebtext", "--source", str(nul), "--out-dir", str(tmp_path / "o"), "--workers", "1",
                      "--tokenizer", "bytes"])


def test_train_sweep_sample_on_bytes(bytes_run, tmp_path):
    ckpt = load_checkpoint(bytes_run)
    assert ckpt["config"]["tokenizer"] == "bytes" and ckpt["model_config"]["vocab_size"] == 256
    assert tokenizer_of(bytes_run).name == "bytes"
    report = eval_length.main([bytes_run, "--tokens", "1024", "--device", "cpu", "--out", str(tmp_path / "s.json")])
    assert [r["length"] for r in report["runs"][0]["results"]] == [32, 64, 128, 256, 512]
    assert all(np.isfinite(r["loss"]) and r["loss"] < np.log(256) + 0.5 for r in report["runs"][0]["results"])
    proc = subprocess.run([sys.executable, "scripts/sample.py", bytes_run, "--tokens", "40", "--prompt", "The fox",
                           "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "generating 40 bytes tokens" in proc.stderr and proc.stdout.startswith("The fox")


def test_what_does_not_fit_the_shards_is_a_clear_error(bytes_dir, bytes_run, synth_dir, trained_runs, tmp_path):
    with pytest.raises(ConfigError, match="tokenizer='gpt2' does not fit .*, whose shards hold bytes tokens"):
        train.main(tiny_bytes_args(bytes_dir, str(tmp_path / "a"), "--tokenizer=gpt2"))
    with pytest.raises(ConfigError, match="vocab_size=97 does not fit .*bytes shards have 256 symbols"):
        train.main(tiny_bytes_args(bytes_dir, str(tmp_path / "b"), "--vocab_size=97"))
    with pytest.raises(ShardError, match="was trained on bytes tokens but .* holds gpt2 tokens; pass --data_dir"):
        eval_length.main([bytes_run, "--data_dir", synth_dir, "--device", "cpu"])
    with pytest.raises(ShardError, match="was trained on gpt2 tokens but .* holds bytes tokens"):
        eval_length.main([trained_runs["softmax"], "--data_dir", bytes_dir, "--device", "cpu"])
    with pytest.raises(SystemExit, match="trained on bytes tokens; the passkey test is built for GPT-2 tokens"):
        eval_passkey.main([bytes_run, "--device", "cpu"])
