"""train.py's optimizer step, schedule and resume, against values computed independently of the
training loop: the gradient of the mean micro-batch loss worked out here from the loader's batches,
AdamW's first step in closed form (w - lr * g / (|g| + eps)), the cosine schedule by hand. Fast:
a tiny model, one or a few steps."""
import json
import math
import os

import pytest
import torch

import train
from checkpoint import list_checkpoints, load_checkpoint
from configurator import load_config
from data.shards import TrainLoader
from model import GPT, GPTConfig

from helpers import tiny_args

STEP = ["--max_iters=1", "--log_interval=1", "--eval_interval=100", "--weight_decay=0", "--warmup_iters=10",
        "--learning_rate=1e-2"]


def metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def first_step_by_hand(synth_dir, ckpt, accum):
    """(initial weights, gradient of the mean loss over `accum` micro-batches, that loss), from a
    model built with the run's seed and the batches a fresh loader deals."""
    cfg = ckpt["config"]
    torch.manual_seed(cfg["seed"])
    model = GPT(GPTConfig(**ckpt["model_config"]))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    loader = TrainLoader(synth_dir, cfg["batch_size"], cfg["block_size"], seed=cfg["seed"], vocab_size=cfg["vocab_size"])
    losses = [model(*loader.next_batch())[1] for _ in range(accum)]
    loss = sum(losses) / accum
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    return init, grads, loss.item()


@pytest.mark.parametrize("accum", [1, 2])
def test_one_step_is_adamw_on_the_mean_gradient(synth_dir, tmp_path, accum):
    """Two micro-steps: the logged loss is their mean and the logged gradient norm is the norm of
    the mean gradient (the loss divided by the accumulation steps); the first AdamW step moves each
    weight by lr * g / (|g| + eps) at the warm-up's first learning rate."""
    out = tmp_path / "run"
    train.main(tiny_args(synth_dir, out, *STEP, "--grad_clip=0", f"--total_batch_size={accum * 8 * 32}"))
    ckpt = load_checkpoint(str(out))
    init, grads, loss = first_step_by_hand(synth_dir, ckpt, accum)
    record = [r for r in metrics(out) if "loss" in r][0]
    norm = math.sqrt(sum(g.double().square().sum().item() for g in grads.values()))
    assert record["grad_norm"] == pytest.approx(norm, rel=1e-4)
    assert record["loss"] == pytest.approx(loss, rel=1e-5)
    lr = 1e-2 * 1 / 10  # warm-up step 0 of 10
    assert record["lr"] == pytest.approx(lr)
    run = json.load(open(out / "run.json"))
    assert run["tokens_per_step"] == accum * 8 * 32 and run["grad_accum_steps"] == accum
    named = dict(GPT(GPTConfig(**ckpt["model_config"])).named_parameters())
    for name in named:
        g = grads[name]
        expected = init[name] - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(ckpt["model"][name], expected, rtol=0, atol=lr * 1e-3, msg=name)


def test_gradient_clipping_is_applied(synth_dir, tmp_path):
    """Clipped to a norm of 1e-9, every gradient element is below AdamW's eps (1e-8), so the first
    step moves a weight by about lr * |g| / eps: about a hundredth of lr at most, where an unclipped
    first step moves most weights by lr."""
    out = tmp_path / "run"
    train.main(tiny_args(synth_dir, out, *STEP, "--grad_clip=1e-9", "--total_batch_size=0"))
    ckpt = load_checkpoint(str(out))
    init, grads, _ = first_step_by_hand(synth_dir, ckpt, 1)
    lr = 1e-3
    moved = max((ckpt["model"][n] - init[n]).abs().max().item() for n in grads)
    assert moved < lr * 0.05
    record = [r for r in metrics(out) if "loss" in r][0]
    norm = math.sqrt(sum(g.double().square().sum().item() for g in grads.values()))
    assert record["grad_norm"] == pytest.approx(norm, rel=1e-4)  # the norm before clipping is logged


def test_lr_schedule_by_hand():
    cfg = load_config(["--learning_rate=1.0", "--min_lr=0.1", "--warmup_iters=4", "--max_iters=100",
                       "--lr_decay_iters=24"])
    assert [train.lr_at(s, cfg) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # cosine from step 4 (1.0) to step 24 (min_lr), then flat: min_lr + 0.45 (1 + cos(pi (s - 4) / 20))
    for s in (4, 9, 14, 19, 24, 50, 99):
        expected = 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, (s - 4) / 20)))
        assert train.lr_at(s, cfg) == pytest.approx(expected), s
    assert train.lr_at(14, cfg) == pytest.approx(0.55)  # halfway
    cfg.lr_decay_iters = 0  # 0 = decay over max_iters
    assert train.lr_at(52, cfg) == pytest.approx(0.55)
    assert train.lr_at(100, cfg) == pytest.approx(0.1)
    cfg.decay_lr = False
    assert train.lr_at(0, cfg) == train.lr_at(60, cfg) == 1.0
    cfg = load_config(["--learning_rate=1.0", "--min_lr=0.0", "--warmup_iters=0", "--max_iters=10"])
    assert train.lr_at(0, cfg) == pytest.approx(1.0) and train.lr_at(5, cfg) == pytest.approx(0.5)


def test_truncate_metrics_keeps_what_the_checkpoint_saw(tmp_path):
    path = str(tmp_path / "metrics.jsonl")
    train.truncate_metrics(path, 4)  # no file yet: nothing to do
    assert not os.path.exists(path)
    records = [{"step": 0, "val_loss": 5.0}, {"step": 2, "loss": 4.0}, {"step": 4, "loss": 3.0},
               {"step": 4, "val_loss": 3.5}, {"step": 6, "loss": 2.0}]
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records) + "\n")
    train.truncate_metrics(path, 4)
    assert metrics(tmp_path) == records[:3]
    assert os.listdir(tmp_path) == ["metrics.jsonl"]  # the temporary file was renamed into place


def test_resume_continues_exactly_in_process(synth_dir, tmp_path):
    """Stopped at step 2 and resumed: the same weights at step 4 as a run that never stopped
    (model, optimizer, loader and random state all restored; dropout makes the last one matter)."""
    common = ["--log_interval=1", "--eval_interval=100", "--dropout=0.1", "--warmup_iters=2", "--ckpt_interval=2"]
    train.main(tiny_args(synth_dir, tmp_path / "straight", "--max_iters=4", *common))
    train.main(tiny_args(synth_dir, tmp_path / "resumed", "--max_iters=2", *common))
    train.main(tiny_args(synth_dir, tmp_path / "resumed", "--max_iters=4", "--init_from=resume", *common))
    a, b = load_checkpoint(str(tmp_path / "straight")), load_checkpoint(str(tmp_path / "resumed"))
    assert a["step"] == b["step"] == 4
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    losses = lambda d: [(r["step"], r["loss"]) for r in metrics(d) if "loss" in r]
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    assert [r["step"] for r in metrics(tmp_path / "resumed") if "val_loss" in r] == [0, 4]


def test_fit_vocabulary_follows_the_shards(tmp_path):
    from configurator import ConfigError
    d = tmp_path / "bytes"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"tokenizer": "bytes"}))
    cfg = load_config([])
    train.fit_vocabulary(cfg, str(d))
    assert (cfg.tokenizer, cfg.vocab_size) == ("bytes", 256)  # 256 is a multiple of 64 already
    cfg = load_config(["--vocab_size=256", "--tokenizer=bytes"])
    train.fit_vocabulary(cfg, str(d))  # exactly the shards' vocabulary fits
    assert (cfg.tokenizer, cfg.vocab_size) == ("bytes", 256)
    with pytest.raises(ConfigError, match=r"^vocab_size=255 does not fit .*bytes shards have 256 symbols; use "
                                          r"vocab_size=0 \(the data's\) or at least 256$"):
        train.fit_vocabulary(load_config(["--vocab_size=255"]), str(d))
    with pytest.raises(ConfigError, match=r"^tokenizer='gpt2' does not fit .*whose shards hold bytes tokens; drop "
                                          r"the tokenizer setting"):
        train.fit_vocabulary(load_config(["--tokenizer=gpt2"]), str(d))
    plain = tmp_path / "plain"  # no meta.json: GPT-2 tokens, the vocabulary unknown
    plain.mkdir()
    cfg = load_config([])
    train.fit_vocabulary(cfg, str(plain))
    assert (cfg.tokenizer, cfg.vocab_size) == ("gpt2", 50304)  # 50257 padded to a multiple of 64
    cfg = load_config(["--vocab_size=97"])
    train.fit_vocabulary(cfg, str(plain))
    assert cfg.vocab_size == 97  # a vocabulary the shards cannot contradict is kept


def test_setup_distributed_reads_torchrun_and_picks_the_backend(monkeypatch):
    from configurator import ConfigError
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    cfg = load_config(["--device=cpu"])
    assert train.setup_distributed(cfg) == (0, 0, 1, "cpu")  # one process, no process group
    inits = []
    monkeypatch.setattr(train.dist, "init_process_group", lambda **kw: inits.append(kw))
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert train.setup_distributed(cfg) == (3, 1, 4, "cpu")
    assert inits == [{"backend": "gloo"}]  # auto on a CPU
    cfg = load_config(["--device=cpu", "--backend=nccl"])
    train.setup_distributed(cfg)
    assert inits[-1] == {"backend": "nccl"}
    monkeypatch.delenv("WORLD_SIZE")  # torchrun sets both; RANK alone is not a distributed run
    assert train.setup_distributed(load_config(["--device=cpu"])) == (3, 1, 1, "cpu") and len(inits) == 2
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        train.setup_distributed(load_config(["--device=tpu"]))


def test_low_precision_runs_under_autocast_and_fp16_scales_the_loss(synth_dir, tmp_path):
    """On a CPU too: bf16 and fp16 autocast change the loss a little (not at all would mean no
    autocast), and only fp16 has a loss scaler (its state is saved for resume)."""
    losses, scalers = {}, {}
    for dtype in ("float32", "bfloat16", "float16"):
        out = tmp_path / dtype
        train.main(tiny_args(synth_dir, out, *STEP, f"--dtype={dtype}", "--total_batch_size=0"))
        losses[dtype] = [r for r in metrics(out) if "loss" in r][0]["loss"]
        scalers[dtype] = load_checkpoint(str(out))["scaler"]
    for dtype in ("bfloat16", "float16"):
        assert losses[dtype] != losses["float32"] and losses[dtype] == pytest.approx(losses["float32"], rel=2e-2)
    assert scalers["float32"] == scalers["bfloat16"] == {} and scalers["float16"]["scale"] == 2.0 ** 16


def test_default_data_dir_and_init_from_auto(synth_dir, tmp_path):
    from configurator import REPO_ROOT
    from data.shards import ShardError
    with pytest.raises(ShardError, match=os.path.join(REPO_ROOT, "data", "no-such-dataset")):
        train.main(["config/demo_cpu.py", "--dataset=no-such-dataset", f"--out_dir={tmp_path / 'x'}", "--model=tiny"])
    out = tmp_path / "auto"
    train.main(tiny_args(synth_dir, out, *STEP, "--init_from=auto"))  # nothing there: from scratch
    train.main(tiny_args(synth_dir, out, *STEP[1:], "--max_iters=2", "--init_from=auto"))  # resumes at step 1
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2]
    assert json.load(open(out / "run.json"))["start_step"] == 1


def test_a_run_saved_on_a_gpu_resumes_on_a_cpu(synth_dir, tmp_path, monkeypatch):
    """The newest checkpoint rewritten as if from CUDA tensors (torch.save told every storage is
    on "cuda:0"): resuming where there is no GPU maps it onto the training device, here the CPU."""
    import torch.serialization
    from checkpoint import list_checkpoints
    common = ["--log_interval=1", "--eval_interval=100", "--ckpt_interval=1"]
    train.main(tiny_args(synth_dir, tmp_path, "--max_iters=1", *common))
    path = list_checkpoints(str(tmp_path))[-1][1]
    ckpt = load_checkpoint(path)
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(ckpt, path)
    train.main(tiny_args(synth_dir, tmp_path, "--max_iters=2", "--init_from=resume", *common))
    assert load_checkpoint(str(tmp_path))["step"] == 2


class _Killed(Exception):
    pass


def test_the_cuda_only_steps_of_the_training_loop(synth_dir, tmp_path, monkeypatch):
    """What the loop does on a CUDA device only, with torch.cuda's stand-ins (the run itself on
    the CPU, its setup saying "cuda"): one synchronize on the training device before the first
    step is timed, and per logged interval the device's peak memory in GiB, then its peak reset.
    And the resume tests' kill hook (TRAIN_CRASH_AFTER_STEP, used in child processes): SIGKILL
    to this process after that step's checkpoint, here a stand-in for os.kill that stops the run."""
    import dataclasses
    calls, setup = [], train.setup_process
    monkeypatch.setattr(train, "setup_process", lambda cfg: dataclasses.replace(setup(cfg), device_type="cuda"))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(("synchronize", device)))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: calls.append(("peak", device)) or 3 * 2**29)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(("reset", device)))

    def kill(pid, sig):
        calls.append(("kill", pid, sig))
        raise _Killed

    monkeypatch.setattr(os, "kill", kill)
    monkeypatch.setenv("TRAIN_CRASH_AFTER_STEP", "2")
    out = tmp_path / "run"
    with pytest.raises(_Killed):
        train.main(tiny_args(synth_dir, str(out), "--max_iters=4", "--log_interval=1", "--ckpt_interval=2",
                             "--attention=softmax"))
    assert calls == [("synchronize", "cpu"), ("peak", "cpu"), ("reset", "cpu"), ("peak", "cpu"), ("reset", "cpu"),
                     ("kill", os.getpid(), 9)]
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["peak_mem_gib"] for r in records if "loss" in r] == [1.5, 1.5]
    assert [step for step, _ in list_checkpoints(str(out))] == [2]   # killed after step 2's checkpoint
