"""train.py's launch on a GPU and on several processes, from a CPU: torch.cuda, torch.compile,
DDP and the process group replaced by recorders, so that what train.py asks of them (which
device, which backend, which precision, which random state) is checked against what a GPU run
needs. The GPU runs themselves are tests/test_train.py's and tests/test_kernels.py's gpu tests."""
import json
import os
import re
import sys
import types
from contextlib import nullcontext

import pytest
import torch

import train
from checkpoint import load_checkpoint
from configurator import ConfigError, load_config
from model import GPT, GPTConfig

from helpers import tiny_args


def resolved_config(synth_dir, out, *extra):
    """The config main() trains with for these arguments: templates filled in, the vocabulary
    fitted to the data (as setup_process does)."""
    cfg = load_config(tiny_args(synth_dir, out, *extra)).resolve_templates()
    train.fit_vocabulary(cfg, synth_dir)
    return cfg


def gather_from_others(monkeypatch, *others):
    """dist.all_gather_object for a stand-in process group: this process's object first, then
    the other ranks' (`others`; without them, every rank holds this process's)."""
    def gather(out, obj):
        out[:] = [obj, *(others or [obj] * (len(out) - 1))]
    monkeypatch.setattr(train.dist, "all_gather_object", gather)


def clear_torchrun(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)


def fake_gpu(monkeypatch, bf16=True):
    """torch.cuda as train.py sees it on a GPU machine; returns the list of calls it gets."""
    calls = []
    monkeypatch.setattr(train, "pick_device", lambda name: "cuda" if name == "auto" else name)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: calls.append(("reset_peak", d)))
    monkeypatch.setattr(train, "keep_freed_memory", lambda: calls.append(("keep_freed_memory",)))
    return calls


@pytest.fixture
def tf32_off():
    """TF32 switched off for the test and put back after (train.py sets the process-wide flags)."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_one_gpu_per_local_process_and_nccl_on_gpus(monkeypatch):
    clear_torchrun(monkeypatch)
    calls = fake_gpu(monkeypatch)
    inits = []
    monkeypatch.setattr(train.dist, "init_process_group", lambda **kw: inits.append(kw))
    assert train.setup_distributed(load_config([])) == (0, 0, 1, "cuda:0")  # one process: GPU 0
    assert calls == [("set_device", "cuda:0")] and inits == []
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert train.setup_distributed(load_config([])) == (5, 2, 8, "cuda:2")  # the node's third GPU
    assert calls[-1] == ("set_device", "cuda:2") and inits == [{"backend": "nccl"}]
    train.setup_distributed(load_config(["--backend=gloo"]))  # asked for: kept on GPUs too
    assert inits[-1] == {"backend": "gloo"}
    assert train.setup_distributed(load_config(["--device=cuda:1"]))[3] == "cuda:1"  # an index given: kept
    assert calls[-1] == ("set_device", "cuda:1")


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the autocast object is built, not entered
def test_gpu_precision_defaults_to_bf16_autocast(monkeypatch, synth_dir, tf32_off):
    clear_torchrun(monkeypatch)
    calls = fake_gpu(monkeypatch)
    cfg = load_config([f"--data_dir={synth_dir}", "--batch_size=4", "--block_size=32", "--total_batch_size=256",
                       "--tf32=True"])
    s = train.setup_process(cfg)
    assert (s.device, s.device_type, s.dtype, s.ptdtype) == ("cuda:0", "cuda", "bfloat16", torch.bfloat16)
    assert isinstance(s.autocast, torch.autocast) and s.autocast.device == "cuda"
    assert s.autocast.fast_dtype == torch.bfloat16
    assert ("reset_peak", "cuda:0") in calls and ("keep_freed_memory",) not in calls
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (s.accum, s.tokens_per_step, s.rank, s.world_size) == (2, 256, 0, 1)

    cfg = load_config([f"--data_dir={synth_dir}", "--dtype=float16", "--tf32=False"])
    s = train.setup_process(cfg)
    assert s.autocast.fast_dtype == torch.float16 and s.ptdtype == torch.float16
    cfg = load_config([f"--data_dir={synth_dir}", "--dtype=float32"])
    assert isinstance(train.setup_process(cfg).autocast, nullcontext)

    fake_gpu(monkeypatch, bf16=False)  # a V100: no bfloat16
    with pytest.raises(ConfigError, match=r"^this GPU has no bfloat16; use --dtype=float16 \(or float32\)$"):
        train.setup_process(load_config([f"--data_dir={synth_dir}"]))
    s = train.setup_process(load_config([f"--data_dir={synth_dir}", "--dtype=float16"]))
    assert s.dtype == "float16"


def test_cpu_precision_defaults_to_float32_without_autocast(monkeypatch, synth_dir, tf32_off):
    clear_torchrun(monkeypatch)
    calls = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: calls.append("keep_freed_memory"))
    s = train.setup_process(load_config([f"--data_dir={synth_dir}", "--device=cpu", "--tf32=False"]))
    assert (s.device, s.device_type, s.dtype, s.ptdtype) == ("cpu", "cpu", "float32", torch.float32)
    assert isinstance(s.autocast, nullcontext) and calls == ["keep_freed_memory"]
    assert not torch.backends.cuda.matmul.allow_tf32
    s = train.setup_process(load_config([f"--data_dir={synth_dir}", "--device=cpu", "--dtype=bfloat16"]))
    assert s.autocast.device == "cpu" and s.autocast.fast_dtype == torch.bfloat16
    monkeypatch.setattr(train, "setup_distributed", lambda cfg: (3, 1, 4, "cpu"))  # rank 3 of 4, 2 per node
    s = train.setup_process(load_config([f"--data_dir={synth_dir}", "--batch_size=4", "--block_size=32",
                                         "--total_batch_size=1024"]))
    assert (s.rank, s.local_rank, s.world_size, s.accum, s.tokens_per_step) == (3, 1, 4, 2, 1024)


class Recorded:
    def __init__(self, what, calls):
        self.what, self.calls = what, calls

    def check_attention_kernel(self, device, dtype):
        self.calls.append(("check_attention_kernel", device, dtype))


def test_compile_checks_the_kernel_first_and_ddp_wraps_the_compiled_model(monkeypatch):
    calls = []
    monkeypatch.setattr(train.torch, "compile", lambda m: calls.append(("compile", m.what)) or Recorded("compiled", calls))
    monkeypatch.setattr(train, "DDP", lambda m, device_ids: calls.append(("DDP", m.what, device_ids)) or "ddp")
    setup = lambda world, device_type: types.SimpleNamespace(device="cuda:3", ptdtype=torch.bfloat16,
                                                            world_size=world, local_rank=3, device_type=device_type)
    model = Recorded("model", calls)
    assert train.compile_and_wrap(model, load_config(["--compile=False"]), setup(1, "cuda")) is model
    assert calls == []
    assert train.compile_and_wrap(model, load_config(["--compile=True"]), setup(1, "cuda")).what == "compiled"
    assert calls == [("check_attention_kernel", "cuda:3", torch.bfloat16), ("compile", "model")]
    calls.clear()
    assert train.compile_and_wrap(model, load_config(["--compile=True"]), setup(8, "cuda")) == "ddp"
    assert calls[-1] == ("DDP", "compiled", [3])  # one GPU per process
    assert train.compile_and_wrap(model, load_config(["--compile=False"]), setup(2, "cpu")) == "ddp"
    assert calls[-1] == ("DDP", "model", None)  # gloo on CPUs: no device ids


def test_gpu_random_state_is_saved_and_restored(monkeypatch):
    got, put = [], []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: got.append(d) or torch.tensor([7, 8], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda t, d: put.append((t.tolist(), t.device.type, d)))
    assert set(train.rng_states("cpu")) == {"torch"} and got == []
    states = train.rng_states("cuda:1")
    assert got == ["cuda:1"] and states["cuda"].tolist() == [7, 8]
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    states["torch"] = torch.get_rng_state()
    torch.manual_seed(1)
    train.set_rng_states(states, "cuda:1")
    assert torch.equal(torch.rand(3), expected)  # the CPU generator restored
    assert put == [([7, 8], "cpu", "cuda:1")]
    train.set_rng_states(states, "cpu")  # a GPU checkpoint resumed on a CPU: only the CPU state
    train.set_rng_states({"torch": states["torch"]}, "cuda:0")  # a CPU checkpoint on a GPU: nothing for it
    assert len(put) == 1


def test_run_records_and_wandb(monkeypatch, synth_dir, tmp_path, capsys):
    """config.json and run.json say what ran; launches.jsonl keeps every launch; wandb (a recorder
    here) gets the config, every record, one run id across resumes, and finish()."""
    log = []
    fake = types.SimpleNamespace(init=lambda **kw: log.append(("init", kw)), finish=lambda: log.append(("finish",)),
                                 log=lambda record, step: log.append(("log", step, record)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(sys, "argv", ["train.py", "config/demo_cpu.py", "--max_iters=2"])
    train.main(tiny_args(synth_dir, tmp_path / "plain", "--max_iters=1"))  # wandb_log off: wandb untouched
    assert log == [] and not os.path.exists(tmp_path / "plain" / "wandb_id")
    capsys.readouterr()
    out = tmp_path / "run"
    common = ["--log_interval=1", "--eval_interval=2", "--wandb_log=True", "--wandb_project=p", "--wandb_run_name=r"]
    train.main(tiny_args(synth_dir, out, "--max_iters=2", *common))
    printed = capsys.readouterr().out
    config = json.load(open(out / "config.json"))
    assert json.loads(printed[:printed.index("\n}\n") + 2]) == config  # the resolved config, printed first
    run = json.load(open(out / "run.json"))
    n_params = GPT(GPTConfig(**load_checkpoint(str(out))["model_config"])).num_params()
    assert run["params"] == n_params and run["world_size"] == 1 and run["start_step"] == 0
    assert run["command"] == f"{os.path.basename(sys.executable)} train.py config/demo_cpu.py --max_iters=2"
    assert load_checkpoint(str(out))["code"] == run["code"] and set(run["code"]) == {"commit", "dirty"}
    assert f"{n_params / 1e6:.2f}M parameters, 1 process(es) x 1 micro-steps x 8 x 32 = 256 tokens per step" in printed

    inits = [e[1] for e in log if e[0] == "init"]
    assert len(inits) == 1
    kw = inits[0]
    run_id = open(out / "wandb_id").read()
    assert (kw["project"], kw["name"], kw["dir"], kw["id"], kw["resume"]) == ("p", "r", str(out), run_id, "allow")
    assert kw["config"]["attention"] == config["attention"] and kw["config"]["params"] == n_params
    logged = [(e[1], e[2]) for e in log if e[0] == "log"]
    metrics = [json.loads(line) for line in open(out / "metrics.jsonl")]
    for m in metrics:  # every metrics.jsonl record went to wandb too, under train/ or val/
        want = {"val/loss": m["val_loss"]} if "val_loss" in m else {f"train/{k}": v for k, v in m.items() if k != "step"}
        assert (m["step"], want) in logged, m
    assert log[-1] == ("finish",)

    log.clear()
    train.main(tiny_args(synth_dir, out, "--max_iters=3", "--init_from=resume", *common))
    assert [e[1]["id"] for e in log if e[0] == "init"] == [run_id]  # the same wandb run continues
    launches = [json.loads(line) for line in open(out / "launches.jsonl")]
    assert [r["start_step"] for r in launches] == [0, 2]
    assert launches[1]["changed_on_resume"] == {"max_iters": {"checkpoint": 2, "now": 3}}


def test_logged_speed_and_times_on_a_fake_clock(monkeypatch, synth_dir, tmp_path, capsys):
    """A clock that moves only when a micro-batch is drawn (60 s each) or the validation runs
    (1000 s): every timing the loop logs is then known exactly. Two micro-steps of 8 x 32 tokens
    per step: 120 s and 512 tokens a step, so 512/120 tokens/s once the validation's time is left
    out; the first step finishes 1000 + 120 s after launch; the ETA is what the remaining steps
    take; MFU is the model's matmul FLOPs at that speed over the (here made-up) peak."""
    clock = [1000.0]
    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: clock[0]))

    class Loader(train.TrainLoader):
        def next_batch(self):
            clock[0] += 60.0
            return super().next_batch()
    evaluate = train.evaluate

    def slow_evaluate(*args):
        clock[0] += 1000.0
        return evaluate(*args)
    monkeypatch.setattr(train, "TrainLoader", Loader)
    monkeypatch.setattr(train, "evaluate", slow_evaluate)
    monkeypatch.setattr(train, "peak_flops", lambda device: 1e12)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    out = tmp_path / "run"
    train.main(tiny_args(synth_dir, out, "--max_iters=5", "--log_interval=2", "--eval_interval=1", "--ckpt_interval=3",
                         "--total_batch_size=512", "--warmup_iters=10", "--learning_rate=1e-3"))
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]  # two validations in one log interval
    assert [(r["step"], "val_loss" in r) for r in records] == [(0, True), (1, True), (2, False), (2, True), (3, True),
                                                               (4, False), (4, True), (5, False), (5, True)]
    train_records = [r for r in records if "loss" in r]
    flops = GPT(GPTConfig(**load_checkpoint(str(out))["model_config"])).flops_per_token(32)["matmul"]
    for r in train_records:
        assert r["tokens_per_s"] == pytest.approx(512 / 120) and r["time_s"] == pytest.approx(120.0), r
        assert r["mfu"] == pytest.approx(flops * 512 / 120 / 1e12)
        assert r["lr"] == pytest.approx(1e-3 * r["step"] / 10)  # the rate the step ran at: warm-up (step) / 10
    assert train_records[0]["first_step_s"] == pytest.approx(1120.0)
    assert ["first_step_s" in r for r in train_records] == [True, False, False]
    printed = capsys.readouterr()
    lines = [line for line in printed.out.splitlines() if "tokens/s" in line]
    assert [line.split(":")[0] for line in lines] == ["step 2/5", "step 4/5", "step 5/5"]
    assert lines[0].endswith(f"lr {2e-4:.2e}, 4 tokens/s, eta 6.0 min")  # 3 steps of 2 min left (validation aside)
    assert lines[2].endswith("eta 0.0 min")
    final = [r for r in records if "val_loss" in r][-1]["val_loss"]
    assert printed.out.splitlines()[-1] == f"step 5: val loss {final:.4f}; checkpoints in {out}"
    assert sorted(int(p.name[5:-3]) for p in out.glob("ckpt_*.pt")) == [3, 5]  # every 3 steps and the last

    assert "%|" not in printed.err  # no progress bar in a log file

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: tqdm's bar instead of the lines
    train.main(tiny_args(synth_dir, tmp_path / "tty", "--max_iters=2", "--log_interval=1"))
    printed = capsys.readouterr()
    last = printed.err.replace("\r", "\n").strip().splitlines()[-1]  # the bar as it was closed
    assert "tokens/s" not in printed.out and "100%|" in last and "| 2/2 [" in last  # one per step, to max_iters


def test_ddp_synchronises_on_the_last_micro_step_only(monkeypatch, synth_dir, tmp_path, capsys):
    """Under DDP each micro-step's backward would all-reduce the gradients; no_sync() defers it to
    the last micro-step of the optimizer step. Rank 1 of two processes, the process group and DDP
    replaced by stand-ins that record, per forward, whether no_sync() was on. In a terminal, only
    rank 0 draws a progress bar."""
    synced = []

    class FakeDDP(torch.nn.Module):
        def __init__(self, model, device_ids):
            super().__init__()
            self.module, self.deferred = model, False
            assert device_ids is None  # gloo on CPUs

        def forward(self, *args):
            synced.append(not self.deferred)
            return self.module(*args)

        def no_sync(self):
            ddp = self

            class Deferred:
                def __enter__(self):
                    ddp.deferred = True

                def __exit__(self, *exc):
                    ddp.deferred = False
            return Deferred()
    monkeypatch.setattr(train, "setup_distributed", lambda cfg: (1, 1, 2, "cpu"))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(train, "DDP", FakeDDP)
    monkeypatch.setattr(train.dist, "all_reduce", lambda t, op=None: t)  # one process's share stands for both
    gather_from_others(monkeypatch)
    train.main(tiny_args(synth_dir, tmp_path / "run", "--max_iters=2", "--total_batch_size=1536"))  # 3 x 8 x 32 x 2
    assert synced == [False, False, True] * 2
    assert "%|" not in capsys.readouterr().err
    monkeypatch.setattr(train, "setup_distributed", lambda cfg: (0, 0, 2, "cpu"))  # rank 0 logs: MFU per GPU
    monkeypatch.setattr(train, "peak_flops", lambda device: 1e12)
    train.main(tiny_args(synth_dir, tmp_path / "rank0", "--max_iters=1", "--total_batch_size=1536"))
    record = [json.loads(line) for line in open(tmp_path / "rank0" / "metrics.jsonl") if '"loss"' in line][0]
    flops = GPT(GPTConfig(**load_checkpoint(str(tmp_path / "rank0"))["model_config"])).flops_per_token(32)["matmul"]
    assert record["mfu"] == pytest.approx(flops * record["tokens_per_s"] / 2e12)  # the tokens of both processes


def test_a_non_finite_loss_between_two_logged_steps_still_stops_the_run(monkeypatch, synth_dir, tmp_path):
    """The loss is checked only when logged or checkpointed (a GPU sync), so the check must
    remember a NaN from any step since the last one: here step 2's loss value is NaN (its gradient
    is not, so the weights and every later loss stay finite), step 3 is fine, and its checkpoint
    is not written."""
    forward = GPT.forward
    calls = [0]

    def nan_on_second_step(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        calls[0] += self.training
        if self.training and calls[0] == 2:  # one micro-step per step: the second step
            loss = loss + torch.tensor(float("nan"))
        return logits, loss
    monkeypatch.setattr(GPT, "forward", nan_on_second_step)
    with pytest.raises(FloatingPointError, match="non-finite training loss by step 3; stopping"):
        train.main(tiny_args(synth_dir, tmp_path / "run", "--max_iters=8", "--log_interval=4", "--eval_interval=100",
                             "--ckpt_interval=3"))
    assert not list((tmp_path / "run").glob("ckpt_*.pt"))


def test_reduce_mean_averages_over_the_processes(monkeypatch):
    """gloo has no AVG: a sum divided by the process count on CPUs, NCCL's AVG on GPUs. The other
    process (a stand-in) holds 3.0, this one 1.0: the mean is 2.0 either way."""
    def all_reduce(t, op):
        other = torch.tensor(3.0)
        if op == train.dist.ReduceOp.SUM:
            t += other
        elif op == train.dist.ReduceOp.AVG:
            t.copy_((t + other) / 2)
        else:
            raise AssertionError(f"unexpected op {op}")
    monkeypatch.setattr(train.dist, "all_reduce", all_reduce)
    setup = lambda world, device_type: types.SimpleNamespace(world_size=world, device_type=device_type)  # noqa: E731
    assert train.reduce_mean(torch.tensor(1.0), setup(2, "cpu")).item() == 2.0
    assert train.reduce_mean(torch.tensor(1.0), setup(2, "cuda")).item() == 2.0
    assert train.reduce_mean(torch.tensor(1.0), setup(1, "cpu")).item() == 1.0  # one process: untouched


def test_resume_checks_the_layout_and_warns_about_the_schedule(synth_dir, tmp_path, capsys):
    """open_run on a checkpoint of 1 process x 2 micro-steps x 8 x 32 (512 tokens a step), asked
    to continue on other layouts (as torchrun would launch them)."""
    out = tmp_path / "run"
    base = ["--total_batch_size=512", "--max_iters=2", "--ckpt_interval=2"]
    train.main(tiny_args(synth_dir, out, *base))
    capsys.readouterr()

    def launch(world, accum, *extra, master=True):
        cfg = resolved_config(synth_dir, out, *base, "--init_from=resume", *extra)
        s = types.SimpleNamespace(world_size=world, accum=accum, tokens_per_step=accum * 8 * 32 * world,
                                  device="cpu", master=master)
        return train.open_run(cfg, s)
    ckpt, changed = launch(1, 2)
    assert ckpt["step"] == 2 and changed == {} and capsys.readouterr().out == ""
    with pytest.raises(ConfigError, match=rf"^{out} already holds checkpoints \(newest: step 2\); continue it with "
                                          r"--init_from=resume, or choose another --out_dir$"):
        launch(1, 2, "--init_from=scratch")
    with pytest.raises(ConfigError, match=r"^the checkpoint was written by 1 processes x 2 micro-steps; resume with "
                                          r"the same layout for an exact continuation, or add --elastic_resume=True "
                                          r"to continue on 2 process\(es\) with the same tokens per step"):
        launch(2, 1)
    with pytest.raises(ConfigError, match=r"^the checkpoint was written by 1 processes x 2 micro-steps; resume"):
        launch(2, 2)  # only the number of processes differs
    _, changed = launch(2, 1, "--elastic_resume=True")
    assert changed["layout"] == ("1 processes x 2 micro-steps", "2 processes x 1 micro-steps")
    _, changed = launch(2, 1, "--elastic_resume=True", "--total_batch_size=0")  # the batch layout may be re-derived
    assert changed["total_batch_size"] == (512, 0)
    with pytest.raises(ConfigError, match=r"^cannot resume with a different config: seed: checkpoint 1337 vs now 5, "
                                          r"total_batch_size: checkpoint 512 vs now 0$"):
        launch(1, 2, "--total_batch_size=0", "--seed=5")
    with pytest.raises(ConfigError, match=r"^elastic_resume keeps the tokens per optimizer step: the checkpoint's "
                                          r"1 processes x 2 micro-steps x 8 x 32 = 512, but now 1,024; use "
                                          r"--total_batch_size=512$"):
        launch(4, 1, "--elastic_resume=True")
    _, changed = launch(1, 2, "--max_iters=4")
    assert changed == {"max_iters": (2, 4)}
    assert capsys.readouterr().out == ("warning: max_iters changed from 2 to 4; the cosine schedule now ends at step 4. "
                                       "Keep the old schedule with --lr_decay_iters=2\n")
    _, changed = launch(1, 2, "--max_iters=4", "--lr_decay_iters=2")  # as the warning says: nothing to warn about
    assert changed == {"max_iters": (2, 4), "lr_decay_iters": (0, 2)}
    launch(1, 2, "--max_iters=4", master=False)  # said once, by rank 0
    assert capsys.readouterr().out == ""


def test_build_deals_the_validation_windows_and_restores_or_reseeds_the_random_state(monkeypatch, synth_dir, tmp_path):
    out = tmp_path / "run"
    train.main(tiny_args(synth_dir, out, "--max_iters=3", "--ckpt_interval=3", "--dropout=0.1"))
    ckpt = load_checkpoint(str(out))
    cfg = resolved_config(synth_dir, out, "--dropout=0.1")
    gather_from_others(monkeypatch)

    def setup(rank, world):
        return types.SimpleNamespace(rank=rank, world_size=world, device="cpu", device_type="cpu", dtype="float32",
                                     data_dir=synth_dir)
    _, val = train.build(cfg, setup(0, 1), None)
    assert len(val) == cfg.eval_iters * cfg.batch_size
    shaped = resolved_config(synth_dir, out, "--n_layer=1", "--n_head=2", "--n_embd=32", "--reweight_p=3",
                             "--rope_base=500", "--attention=lssar", "--attention_backend=reference",
                             "--dropout=0.2", "--bias=False", "--seed=7")
    state, _ = train.build(shaped, setup(1, 2), None)
    mc = state.model_config
    assert (mc.n_layer, mc.n_head, mc.n_embd, mc.block_size, mc.vocab_size) == (1, 2, 32, 32, shaped.vocab_size)
    assert (mc.attention, mc.reweight_p, mc.rope_base, mc.attention_backend, mc.dropout, mc.bias) == \
        ("lssar", 3.0, 500.0, "reference", 0.2, False)
    loader = state.loader
    assert (loader.rank, loader.world_size, loader.seed, loader.vocab_size) == (1, 2, 7, shaped.vocab_size)
    drawn = torch.rand(4)  # after the (rank-independent) init, dropout's stream is seeded by rank
    torch.manual_seed(7 + 1)
    assert torch.equal(drawn, torch.rand(4))
    assert torch.equal(train.build(cfg, setup(1, 2), None)[1], val[1::2])  # dealt out: rank r gets r, r + 2, ...

    state, _ = train.build(cfg, setup(0, 1), ckpt)  # the same layout: the saved random state continues
    assert state.step == 3
    drawn = torch.rand(4)
    torch.set_rng_state(ckpt["rng"][0]["torch"])
    assert torch.equal(drawn, torch.rand(4))
    train.build(cfg, setup(1, 2), ckpt)  # elastic: rank 1 of 2 from a 1-process checkpoint, reseeded by step
    drawn = torch.rand(4)
    torch.manual_seed(cfg.seed + 1 + 1000 * 3)
    assert torch.equal(drawn, torch.rand(4))

    half = tmp_path / "fp16"  # a float16 run's loss scale comes back with it
    train.main(tiny_args(synth_dir, half, "--max_iters=1", "--dtype=float16"))
    ckpt16 = load_checkpoint(str(half))
    ckpt16["scaler"]["scale"] = 1024.0
    cfg16 = resolved_config(synth_dir, half, "--dtype=float16")
    state, _ = train.build(cfg16, types.SimpleNamespace(**{**vars(setup(0, 1)), "dtype": "float16"}), ckpt16)
    assert state.scaler.get_scale() == 1024.0

    gather_from_others(monkeypatch, 0)
    with pytest.raises(ConfigError, match=r"^the processes would start from different steps \[3, 0\]: out_dir must "
                                          r"be on a filesystem every node sees$"):
        train.build(cfg, setup(0, 2), ckpt)


def test_checkpoint_refuses_non_finite_weights_and_gathers_every_process_random_state(monkeypatch, synth_dir, tmp_path):
    out = tmp_path / "run"
    train.main(tiny_args(synth_dir, out, "--max_iters=1"))
    cfg = resolved_config(synth_dir, out, "--keep_checkpoints=5")
    s = types.SimpleNamespace(rank=0, world_size=2, device="cpu", device_type="cpu", dtype="float32", data_dir=synth_dir,
                              master=True, accum=1)
    gather_from_others(monkeypatch)
    state, _ = train.build(cfg, s, None)
    state.step = 7
    state.kernel_tiles = {"bf16/lssa/d64": [64, 32, 4, 2]}   # what train.pin_kernel_tiles reads back on a resume
    other = {"torch": torch.tensor([1, 2], dtype=torch.uint8)}
    gather_from_others(monkeypatch, other)
    train.checkpoint(state, cfg, s, {"commit": "abc", "dirty": False})
    saved = load_checkpoint(str(out))
    assert saved["step"] == 7 and saved["world_size"] == 2 and saved["code"] == {"commit": "abc", "dirty": False}
    assert saved["kernel_tiles"] == {"bf16/lssa/d64": [64, 32, 4, 2]}
    assert len(saved["rng"]) == 2 and saved["rng"][1]["torch"].tolist() == [1, 2]
    assert saved["rng"][0]["torch"].dtype == torch.uint8 and len(saved["rng"][0]["torch"]) > 2  # this process's own
    for state.step in (9, 11):
        train.checkpoint(state, cfg, s, {})
    assert sorted(int(p.name[5:-3]) for p in out.glob("ckpt_*.pt")) == [1, 7, 9, 11]  # keep_checkpoints=5
    with torch.no_grad():
        next(state.model.parameters())[0, 0] = float("nan")
    state.step = 8
    with pytest.raises(FloatingPointError, match=rf"^non-finite weights at step 8; not saving. The last good checkpoint "
                                                 rf"in {out} is kept$"):
        train.checkpoint(state, cfg, s, {})
    assert load_checkpoint(str(out))["step"] == 11


def test_a_complete_run_says_so_and_the_process_group_is_closed(monkeypatch, synth_dir, tmp_path, capsys):
    out = tmp_path / "run"
    train.main(tiny_args(synth_dir, out, "--max_iters=2", "--init_from=auto"))
    assert json.load(open(out / "config.json"))["init_from"] == "scratch"  # what auto chose is recorded
    closed = []
    monkeypatch.setattr(train.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(train.dist, "destroy_process_group", lambda: closed.append(True))
    capsys.readouterr()
    train.main(tiny_args(synth_dir, out, "--max_iters=2", "--init_from=auto"))
    assert capsys.readouterr().out == f"{out} is complete (step 2 of max_iters=2); nothing to do\n"
    assert closed == [True] and len(open(out / "metrics.jsonl").readlines()) == 3  # nothing trained or logged


def test_a_one_step_decay_ends_at_min_lr():
    cfg = load_config(["--learning_rate=1.0", "--min_lr=0.1", "--warmup_iters=4", "--lr_decay_iters=5"])
    assert [train.lr_at(step, cfg) for step in (3, 4, 5, 6)] == pytest.approx([1.0, 1.0, 0.1, 0.1])


def test_the_parameter_count_is_printed_in_millions(monkeypatch, synth_dir, tmp_path, capsys):
    """10,005,001 parameters print as 10.01M (a stand-in count: 10,005,001 / 10^6 = 10.005001 rounds
    up; a divisor even one larger, 10.00499..., would round down)."""
    monkeypatch.setattr(GPT, "num_params", lambda self, **kw: 10_005_001)
    train.main(tiny_args(synth_dir, tmp_path, "--max_iters=1"))
    assert "\n10.01M parameters, 1 process(es)" in capsys.readouterr().out


def test_record_launch_writes_readable_records_with_the_kernel_tiles_and_one_wandb_id(monkeypatch, synth_dir, tmp_path,
                                                                                     capsys):
    """config.json and run.json indented for reading (and the config printed the same way), the run's kernel tiles in
    run.json, no wandb unless asked; with wandb, an 8-character hex id kept in out_dir and reused on a resume."""
    out = tmp_path / "run"
    out.mkdir()
    cfg = resolved_config(synth_dir, out)
    s = types.SimpleNamespace(rank=0, world_size=1, device="cpu", device_type="cpu", dtype="float32", data_dir=synth_dir,
                              master=True, accum=1, tokens_per_step=cfg.batch_size * cfg.block_size)
    state, _ = train.build(cfg, s, None)
    state.kernel_tiles = {"other/fwd/64": [32, 32, 4, 2]}
    capsys.readouterr()
    run_info, wandb = train.record_launch(cfg, s, state, {})
    assert wandb is None
    config, run = json.loads((out / "config.json").read_text()), json.loads((out / "run.json").read_text())
    assert run["kernel_tiles"] == {"other/fwd/64": [32, 32, 4, 2]} and run == json.loads(json.dumps(run_info))
    assert (out / "config.json").read_text() == json.dumps(config, indent=2)
    assert (out / "run.json").read_text() == json.dumps(run, indent=2)
    assert capsys.readouterr().out.startswith(json.dumps(config, indent=2) + "\n")

    inits = []
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: inits.append(kw)))
    cfg.wandb_log = True
    for _ in range(2):   # a launch, then a resume in the same folder
        assert train.record_launch(cfg, s, state, {})[1] is sys.modules["wandb"]
    first = (out / "wandb_id").read_text()
    assert re.fullmatch(r"[0-9a-f]{8}", first) and [i["id"] for i in inits] == [first, first]
