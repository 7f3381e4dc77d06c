"""checkpoint.py on its own: atomic writes, pruning, finding the newest, and loading that never
runs code from the file. Fast: tiny tensors and a two-layer model, no training."""
import os
import pickle

import pytest
import torch

from checkpoint import (checkpoint_path, evaluation_overrides, list_checkpoints, load_checkpoint, load_model,
                        resolve_checkpoint, save_checkpoint, strip_compile_prefix, tokenizer_of)
from model import GPT, GPTConfig

CONFIG = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=32, attention="lssa")


def state(step, model=None, **config):
    model = model or GPT(GPTConfig(**CONFIG))
    return {"model": model.state_dict(), "step": step, "config": dict(config),
            "model_config": {**CONFIG}}


def test_path_names_the_step_with_six_digits(tmp_path):
    assert checkpoint_path(str(tmp_path), 42) == os.path.join(str(tmp_path), "ckpt_000042.pt")


def test_list_checkpoints_sorts_by_step_and_skips_partial_files(tmp_path):
    for name in ("ckpt_000010.pt", "ckpt_000002.pt", "ckpt_1000000.pt", "ckpt_000005.pt.tmp", "ckpt_x.pt", "other.pt"):
        (tmp_path / name).write_bytes(b"")
    assert list_checkpoints(str(tmp_path)) == [
        (2, str(tmp_path / "ckpt_000002.pt")), (10, str(tmp_path / "ckpt_000010.pt")),
        (1000000, str(tmp_path / "ckpt_1000000.pt"))]  # by step, not by name: 1000000 sorts last
    assert list_checkpoints(str(tmp_path / "missing")) == []


@pytest.mark.parametrize("keep, left", [(2, [3, 4]), (1, [4]), (0, [4]), (3, [2, 3, 4])])
def test_save_keeps_the_newest_and_leaves_no_temporary_file(tmp_path, keep, left):
    for step in (1, 2, 3, 4):
        path = save_checkpoint({"step": step}, str(tmp_path), step, keep=keep)
        assert path == checkpoint_path(str(tmp_path), step)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == left  # keep=0 still keeps the newest
    assert sorted(os.listdir(tmp_path)) == [f"ckpt_{s:06d}.pt" for s in left]  # no .tmp left behind
    assert torch.load(checkpoint_path(str(tmp_path), 4), weights_only=True) == {"step": 4}


def test_save_keeps_two_by_default(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint({"step": step}, str(tmp_path), step)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [2, 3]


def test_save_never_leaves_a_half_written_checkpoint(tmp_path, monkeypatch):
    """A crash inside torch.save (here: an exception) leaves the previous checkpoint the newest."""
    save_checkpoint(state(1), str(tmp_path), 1)

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(state(2), str(tmp_path), 2)
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [1]
    assert load_checkpoint(str(tmp_path))["step"] == 1


def test_resolve_finds_the_newest_or_says_what_is_missing(tmp_path):
    save_checkpoint({"step": 3}, str(tmp_path), 3)
    save_checkpoint({"step": 12}, str(tmp_path), 12)
    assert resolve_checkpoint(str(tmp_path)) == checkpoint_path(str(tmp_path), 12)
    assert resolve_checkpoint(checkpoint_path(str(tmp_path), 3)) == checkpoint_path(str(tmp_path), 3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint \(ckpt_\*\.pt\) in .*empty; train one with"):
        resolve_checkpoint(str(empty))
    with pytest.raises(FileNotFoundError, match="checkpoint .*nope.pt does not exist"):
        resolve_checkpoint(str(tmp_path / "nope.pt"))


def test_strip_compile_prefix_only_strips_the_leading_prefix():
    sd = {"_orig_mod.lm_head.weight": 1, "wte.weight": 2, "x._orig_mod.y": 3}
    assert strip_compile_prefix(sd) == {"lm_head.weight": 1, "wte.weight": 2, "x._orig_mod.y": 3}


def test_load_fills_path_prefix_and_old_tokenizer(tmp_path):
    model = GPT(GPTConfig(**CONFIG))
    ckpt = state(7, model)
    ckpt["model"] = {"_orig_mod." + k: v for k, v in ckpt["model"].items()}  # saved from a compiled model
    save_checkpoint(ckpt, str(tmp_path), 7)
    loaded = load_checkpoint(str(tmp_path))
    assert loaded["path"] == checkpoint_path(str(tmp_path), 7)
    assert loaded["config"]["tokenizer"] == "gpt2"  # checkpoints from before byte-level data
    assert loaded["model"].keys() == model.state_dict().keys()
    save_checkpoint(state(8, model, tokenizer="bytes"), str(tmp_path), 8)
    assert load_checkpoint(str(tmp_path))["config"]["tokenizer"] == "bytes"  # a recorded one is kept
    assert tokenizer_of(str(tmp_path)).name == "bytes"
    assert tokenizer_of(load_checkpoint(checkpoint_path(str(tmp_path), 7))).name == "gpt2"


class Payload:
    """An object whose unpickling runs code: what a malicious checkpoint would carry."""
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_loading_never_executes_code_from_the_file(tmp_path, monkeypatch):
    """The README's guarantee: a checkpoint that would run code when unpickled is refused
    (torch.load(weights_only=True)), and the code does not run."""
    monkeypatch.chdir(tmp_path)
    bad = state(1)
    bad["extra"] = Payload()
    with open(tmp_path / "ckpt_000001.pt", "wb") as f:
        torch.save(bad, f)
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(str(tmp_path))
    with pytest.raises(pickle.UnpicklingError):
        load_model(str(tmp_path))
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_weights_only_is_asked_for_explicitly(tmp_path, monkeypatch):
    """torch < 2.6 (requirements.txt allows 2.4) defaults to weights_only=False: the guarantee
    above holds there only if load_checkpoint asks for it."""
    save_checkpoint(state(1), str(tmp_path), 1)
    calls, real_load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    load_checkpoint(str(tmp_path))
    assert calls[0].get("weights_only") is True


def test_load_puts_the_tensors_where_asked(tmp_path):
    save_checkpoint(state(1), str(tmp_path), 1)
    ckpt = load_checkpoint(str(tmp_path), map_location="meta")  # a device a CPU machine has besides cpu
    assert {t.device.type for t in ckpt["model"].values()} == {"meta"}


def test_evaluation_overrides():
    assert evaluation_overrides() == {}
    assert evaluation_overrides("lssar", 15) == {"attention": "lssar", "reweight_p": 15}
    assert evaluation_overrides(attention_backend="torch") == {"attention_backend": "torch"}
    assert evaluation_overrides("softmax") == {"attention": "softmax"}
    with pytest.raises(ValueError, match=r"--p sets the re-weighting power: use it with --attention lssar \| softmax_reweight \| sigmoid_l1_reweight$"):
        evaluation_overrides("softmax", 15)
    with pytest.raises(ValueError, match="--p sets"):
        evaluation_overrides(None, 15)


def test_load_model_restores_the_weights_in_eval_mode_with_overrides(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG))
    save_checkpoint(state(5, model), str(tmp_path), 5)
    loaded, ckpt = load_model(str(tmp_path), attention="lssar", reweight_p=3)
    assert ckpt["step"] == 5 and not loaded.training
    assert loaded.config.attention == "lssar" and loaded.config.reweight_p == 3
    assert loaded.config.n_embd == CONFIG["n_embd"]
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with pytest.raises(ValueError, match=r"trained with lssa\) does not fit attention=ssmax.*only an ssmax"):
        load_model(str(tmp_path), attention="ssmax")


def test_a_gpu_written_checkpoint_loads_on_a_cpu_only_machine(tmp_path, monkeypatch):
    """A checkpoint saved from CUDA tensors (forged here: torch.save records every storage as on
    "cuda:0") names that device in the file; loading it where there is no GPU must map it to the
    device asked for, or torch refuses to deserialize it."""
    import torch.serialization
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG))
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        save_checkpoint(state(5, model), str(tmp_path), 5)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):  # the forgery is real: unmapped, it needs a GPU
            torch.load(checkpoint_path(str(tmp_path), 5), weights_only=True)
    loaded, _ = load_model(str(tmp_path), "cpu")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
