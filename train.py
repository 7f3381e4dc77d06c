"""
Train a GPT with softmax, lssa or lssar attention.

    python train.py config/demo_cpu.py                          # CPU, a couple of minutes
    python train.py config/paper_124m.py --attention=lssar      # one GPU
    torchrun --standalone --nproc_per_node=8 train.py config/paper_124m.py --attention=lssar
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_backend=c10d \
        --rdzv_endpoint=HOST:29500 train.py config/paper_124m.py           # multi-node

Each run writes into out_dir: config.json (the resolved config), run.json (code version,
hardware, command), metrics.jsonl (one JSON object per logged step) and ckpt_<step>.pt
checkpoints. --init_from=resume continues from the newest checkpoint exactly: the same
batches, the same random numbers, the same losses as a run that never stopped.

Read main() first: it is the table of contents, one line per step, each step a function below
it in the order it runs; the training loop is training_loop(), top to bottom.
"""
import json
import math
import os
import sys
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from attention import KERNEL_TYPES, EnvError, kernel_module
from checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from configurator import REPO_ROOT, RESUMABLE_CHANGES, ConfigError, config_diff, grad_accum_steps, load_config
from data.catalog import shards_tokenizer
from data.shards import ShardError, TrainLoader, load_tokens, val_windows
from data.tokenizer import VOCAB_SIZES
from dirlock import DirectoryBusy, lock_dir
from model import GPT, config_from_preset
from runinfo import code_version, hardware, keep_freed_memory, peak_flops, pick_device


def precision_flags():
    """torch's process-wide fp32 matmul precision: whether TF32 may be used (matmuls, cuDNN)."""
    return {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


@contextmanager
def precision_kept():
    """precision_flags() as they were on entry, put back on exit (also as a decorator). train.main
    runs inside it: called in-process (the tests, a notebook) it must not leave later fp32 work
    in TF32 (~1e-3 error), which would make fp32 comparisons fail by test order."""
    flags = precision_flags()
    try:
        yield flags
    finally:
        torch.backends.cuda.matmul.allow_tf32 = flags["cuda.matmul.allow_tf32"]
        torch.backends.cudnn.allow_tf32 = flags["cudnn.allow_tf32"]
        torch.set_float32_matmul_precision(flags["float32_matmul_precision"])   # last: it overrides the first


@precision_kept()   # setup_process may switch TF32 on for the whole process: put back on the way out
def main(argv):
    """The table of contents: each step is a function below, in the order it runs."""
    t_start = time.time()   # for the time to the first step (start-up: building, compiling, autotuning)
    cfg = load_config(argv).resolve_templates()
    s = setup_process(cfg)                                  # rank, device, precision, batch layout
    # one launch per out_dir: rank 0 is the process that writes it (checkpoints, metrics), so it
    # alone locks it; a refused rank 0 ends its torchrun, whose other ranks torchrun then stops
    with lock_dir(cfg.out_dir) if s.master else nullcontext(), kernel_tiles_kept():
        ckpt, resumed_with = open_run(cfg, s)               # refuse to overwrite, or pick up where it stopped
        state, val = build(cfg, s, ckpt)                    # model, optimizer, data (restored from ckpt)
        state.kernel_tiles = pin_kernel_tiles(cfg, s, ckpt)  # the fused kernels' tiles: one choice, every rank
        if ckpt is not None and state.step >= cfg.max_iters:
            if s.master:
                print(f"{cfg.out_dir} is complete (step {state.step} of max_iters={cfg.max_iters}); nothing to do")
        else:
            model = compile_and_wrap(state.model, cfg, s)       # torch.compile, DDP
            run_info, wandb = record_launch(cfg, s, state, resumed_with)   # what makes a result traceable
            training_loop(cfg, s, state, model, val, run_info, wandb, t_start)
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass
class Setup:
    """Where and how this process trains: its place among the processes, its device and
    precision, and the batch layout (micro-steps x batch x context x processes per step)."""
    rank: int
    local_rank: int
    world_size: int
    device: str
    device_type: str
    dtype: str
    ptdtype: torch.dtype
    autocast: object
    data_dir: str
    accum: int
    tokens_per_step: int

    @property
    def master(self):
        return self.rank == 0


def setup_process(cfg):
    rank, local_rank, world_size, device = setup_distributed(cfg)
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device_type == "cuda" else "float32")
    if dtype == "bfloat16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bfloat16; use --dtype=float16 (or float32)")
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=ptdtype)
    if device_type == "cpu":
        keep_freed_memory()
    else:
        torch.cuda.reset_peak_memory_stats(device)  # peak_mem_gib is this run's, per log interval
    if cfg.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    accum = grad_accum_steps(cfg, world_size)
    data_dir = cfg.data_dir or os.path.join(REPO_ROOT, "data", cfg.dataset)
    fit_vocabulary(cfg, data_dir)
    tokens_per_step = accum * cfg.batch_size * cfg.block_size * world_size
    return Setup(rank, local_rank, world_size, device, device_type, dtype, ptdtype, autocast,
                 data_dir, accum, tokens_per_step)


def open_run(cfg, s):
    """The run directory: refuse to overwrite it, or load its newest checkpoint and check that
    this launch may continue it. Returns (checkpoint or None, what changed since it)."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    checkpoints = list_checkpoints(cfg.out_dir)
    ckpt, resumed_with = None, {}
    if cfg.init_from == "auto":  # for preemptible jobs and re-runnable scripts
        cfg.init_from = "resume" if checkpoints else "scratch"
    if cfg.init_from == "scratch" and checkpoints:
        raise ConfigError(f"{cfg.out_dir} already holds checkpoints (newest: step {checkpoints[-1][0]}); "
                          f"continue it with --init_from=resume, or choose another --out_dir")
    if cfg.init_from == "resume":
        if not checkpoints:
            raise ConfigError(f"--init_from=resume but {cfg.out_dir} has no checkpoint; start with --init_from=scratch")
        ckpt = load_checkpoint(checkpoints[-1][1], map_location=s.device)
        # elastic: total_batch_size may change with the layout, as long as the tokens per step do not (below)
        changed = config_diff(ckpt["config"], asdict(cfg),
                              ignore=RESUMABLE_CHANGES | ({"total_batch_size"} if cfg.elastic_resume else set()))
        if changed:
            raise ConfigError("cannot resume with a different config: " + ", ".join(
                f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in changed.items()))
        resumed_with = config_diff(ckpt["config"], asdict(cfg), ignore={"init_from"})  # logged in launches.jsonl
        if ckpt["config"]["max_iters"] != cfg.max_iters and not cfg.lr_decay_iters and s.master:
            print(f"warning: max_iters changed from {ckpt['config']['max_iters']} to {cfg.max_iters}; the cosine "
                  f"schedule now ends at step {cfg.max_iters}. Keep the old schedule with "
                  f"--lr_decay_iters={ckpt['config']['max_iters']}")
        if ckpt["world_size"] != s.world_size or ckpt["accum"] != s.accum:
            layout = f"{ckpt['world_size']} processes x {ckpt['accum']} micro-steps"
            if not cfg.elastic_resume:
                raise ConfigError(f"the checkpoint was written by {layout}; resume with the same layout for an exact "
                                  f"continuation, or add --elastic_resume=True to continue on {s.world_size} "
                                  f"process(es) with the same tokens per step (not bit-exact: see docs/data.md)")
            before = ckpt["accum"] * cfg.batch_size * cfg.block_size * ckpt["world_size"]
            if before != s.tokens_per_step:
                raise ConfigError(f"elastic_resume keeps the tokens per optimizer step: the checkpoint's {layout} x "
                                  f"{cfg.batch_size} x {cfg.block_size} = {before:,}, but now "
                                  f"{s.tokens_per_step:,}; use --total_batch_size={before}")
            resumed_with["layout"] = (layout, f"{s.world_size} processes x {s.accum} micro-steps")
    return ckpt, resumed_with


@dataclass
class State:
    """Everything a checkpoint saves and a resume restores (with the random number generators)."""
    model: GPT                  # the plain model, not the compiled or DDP wrapper
    model_config: object
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: TrainLoader
    step: int = 0
    kernel_tiles: dict = None   # the fused kernels' pinned tiles (pin_kernel_tiles), None without them


def build(cfg, s, ckpt):
    """The model, optimizer and data, restored from the checkpoint if there is one. Returns
    (State, this process's validation windows)."""
    torch.manual_seed(cfg.seed)
    model_config = model_config_of(cfg)
    model = GPT(model_config).to(s.device)
    torch.manual_seed(cfg.seed + s.rank)  # the same init everywhere; dropout differs across ranks
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), s.device_type)
    scaler = torch.amp.GradScaler(s.device_type, enabled=(s.dtype == "float16"))
    loader = TrainLoader(s.data_dir, cfg.batch_size, cfg.block_size, rank=s.rank, world_size=s.world_size,
                         seed=cfg.seed, vocab_size=cfg.vocab_size)
    # A fixed validation set, the same for any number of processes: the first eval_iters x
    # batch_size windows, dealt out across the processes.
    val = load_tokens(s.data_dir, "val", cfg.vocab_size)
    try:
        val = val_windows(val, cfg.block_size, cfg.eval_iters * cfg.batch_size)
    except ShardError as e:
        raise ShardError(f"{e} (the windows are eval_iters x batch_size = {cfg.eval_iters} x {cfg.batch_size}: "
                         f"lower eval_iters)") from None
    val = torch.from_numpy(np.ascontiguousarray(val[s.rank::s.world_size]))
    state = State(model, model_config, optimizer, scaler, loader)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        loader.load_state_dict(ckpt["loader"])
        if len(ckpt["rng"]) == s.world_size:
            set_rng_states(ckpt["rng"][s.rank], s.device)
        else:  # elastic: dropout's random numbers start afresh (the same on every launch of this layout)
            torch.manual_seed(cfg.seed + s.rank + 1000 * ckpt["step"])
        state.step = ckpt["step"]
    if s.world_size > 1:  # e.g. out_dir not on a filesystem every node sees
        steps = [None] * s.world_size
        dist.all_gather_object(steps, state.step)
        if len(set(steps)) > 1:
            raise ConfigError(f"the processes would start from different steps {steps}: out_dir must be on a "
                              f"filesystem every node sees")
    return state, val


@contextmanager
def kernel_tiles_kept():
    """The fused kernels' pinned tiles as they were on entry, put back on exit: pin_kernel_tiles
    pins the run's for the whole process, and what runs in-process after main (the tests, an
    evaluation in a notebook) must launch what it launched before, not the last run's tiles."""
    lssa_triton = sys.modules.get("kernels.lssa_triton")   # not imported: nothing pinned yet
    before = lssa_triton.pinned_tiles() if lssa_triton is not None else {}
    try:
        yield
    finally:
        lssa_triton = sys.modules.get("kernels.lssa_triton")
        if lssa_triton is not None:
            lssa_triton.pin_tiles(before)


def pin_kernel_tiles(cfg, s, ckpt):
    """The fused attention kernels' tiles, chosen once for the whole run: rank 0's choice (its
    checkpoint's on a resume, else the first tile of each list of this GPU's tables), launched by
    every process and saved in every checkpoint. Tiles sum in different orders, so ranks on other
    tiles, or a resume on tiles an updated table or the autotuner picked, would not compute what
    one uninterrupted run does. Returns the tiles, or None where no fused kernel runs (or with
    LSSA_TRITON_AUTOTUNE=1, which tunes per process: warned about)."""
    if cfg.attention not in KERNEL_TYPES or cfg.attention_backend == "reference" or \
            (s.device_type != "cuda" and "TRITON_INTERPRET" not in os.environ):
        return None
    try:
        lssa_triton = kernel_module()
    except ImportError:
        return None   # backend auto warns and takes the reference (attention.check_kernel)
    if lssa_triton.AUTOTUNE:
        lssa_triton.pin_tiles({})
        if s.master:
            print("warning: LSSA_TRITON_AUTOTUNE=1: each process autotunes its own kernel tiles, so the "
                  "processes, and a resumed run, may sum in different orders (not bit-exact)")
        return None
    tiles = [None]
    if s.master:
        tiles[0] = lssa_triton.default_tiles(s.device)
        saved = (ckpt or {}).get("kernel_tiles")
        if saved and set(saved) == set(tiles[0]):
            tiles[0] = saved
        elif saved:
            tables = lambda tiles: "/".join(sorted({k.split("/")[0] for k in tiles} - {"fp32"}))   # noqa: E731
            print(f"warning: the checkpoint's kernel tiles are of another GPU's table ({tables(saved)}); this GPU "
                  f"launches its own ({tables(tiles[0])}), so the run does not continue bit-exactly")
    if s.world_size > 1:
        dist.broadcast_object_list(tiles, src=0)
    lssa_triton.pin_tiles(tiles[0])
    return tiles[0]


def compile_and_wrap(model, cfg, s):
    """What runs forward and backward: the model, compiled if asked, in DDP on several processes."""
    if cfg.compile:
        model.check_attention_kernel(s.device, s.ptdtype)  # a failing kernel is found before the graph needs it
        model = torch.compile(model)
    if s.world_size > 1:
        model = DDP(model, device_ids=[s.local_rank] if s.device_type == "cuda" else None)
    return model


def record_launch(cfg, s, state, resumed_with):
    """What makes a result traceable: config.json, run.json and launches.jsonl in out_dir
    (metrics.jsonl cut back to the checkpoint's step), and wandb if asked. Returns (run_info, wandb or None)."""
    run_info = {"code": code_version(), "hardware": hardware(s.device), "world_size": s.world_size,
                "start_step": state.step, "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                "params": state.model.num_params(), "grad_accum_steps": s.accum,
                "tokens_per_step": s.tokens_per_step, "kernel_tiles": state.kernel_tiles,
                "changed_on_resume": {k: {"checkpoint": a, "now": b} for k, (a, b) in resumed_with.items()}}
    if s.master:
        print(json.dumps(asdict(cfg), indent=2))
        print(f"{state.model.num_params() / 1e6:.2f}M parameters, {s.world_size} process(es) x {s.accum} micro-steps "
              f"x {cfg.batch_size} x {cfg.block_size} = {s.tokens_per_step:,} tokens per step on {s.device} ({s.dtype})")
        with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
            json.dump(asdict(cfg), f, indent=2)
        with open(os.path.join(cfg.out_dir, "run.json"), "w") as f:  # this launch
            json.dump(run_info, f, indent=2)
        append_jsonl(os.path.join(cfg.out_dir, "launches.jsonl"), run_info)  # every launch, resumes too
        truncate_metrics(os.path.join(cfg.out_dir, "metrics.jsonl"), state.step)
    wandb = None
    if cfg.wandb_log and s.master:
        import wandb  # imported only when used
        id_path = os.path.join(cfg.out_dir, "wandb_id")  # a resumed run continues the same wandb run
        if not os.path.exists(id_path):
            with open(id_path, "w") as f:
                f.write(uuid.uuid4().hex[:8])
        with open(id_path) as f:
            wandb_id = f.read().strip()
        wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, dir=cfg.out_dir, id=wandb_id,
                   config={**asdict(cfg), **run_info}, resume="allow")
    return run_info, wandb


def training_loop(cfg, s, state, model, val, run_info, wandb, t_start):
    """From state.step to max_iters: evaluate every eval_interval steps, one optimizer step of
    accum micro-batches, log every log_interval steps, checkpoint every ckpt_interval steps.
    `model` is what runs forward and backward (compiled, DDP-wrapped); state.model is the plain one."""
    from tqdm import tqdm
    raw_model, optimizer, scaler, loader = state.model, state.optimizer, state.scaler, state.loader
    step, accum, device = state.step, s.accum, s.device
    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    flops = raw_model.flops_per_token(cfg.block_size)["matmul"]
    peak = peak_flops(device)
    interactive = s.master and sys.stderr.isatty()  # in a log file, plain lines read better than a bar
    bar = tqdm(total=cfg.max_iters, initial=step, disable=not interactive, dynamic_ncols=True, mininterval=1.0)
    bad = torch.zeros((), dtype=torch.bool, device=device)  # any non-finite loss since the last check
    t_last, steps_since, eval_time = time.time(), 0, 0.0
    start_step, first_step_s = step, None
    while step < cfg.max_iters:
        if step % cfg.eval_interval == 0:
            t_eval = time.time()
            val_loss = evaluate(raw_model, val, cfg, s)
            eval_time += time.time() - t_eval
            if s.master:
                append_jsonl(metrics_path, {"step": step, "val_loss": val_loss})
                bar.write(f"step {step}: val loss {val_loss:.4f}")  # tqdm.write prints plainly without a bar
                if wandb:
                    wandb.log({"val/loss": val_loss}, step=step)
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro in range(accum):
            x, y = loader.next_batch()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            sync = nullcontext() if (s.world_size == 1 or micro == accum - 1) else model.no_sync()
            with sync:
                with s.autocast:
                    _, loss = model(x, y)
                scaler.scale(loss / accum).backward()
            loss_sum += loss.detach().float()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        bad |= ~torch.isfinite(loss_sum)
        step += 1
        state.step = step
        steps_since += 1
        bar.update(1)
        if step == start_step + 1:   # the first step of this process, finished: logged with the next record
            if s.device_type == "cuda":
                torch.cuda.synchronize(device)
            first_step_s = time.time() - t_start

        last = step == cfg.max_iters
        if step % cfg.log_interval == 0 or last or step % cfg.ckpt_interval == 0:
            loss_value = reduce_mean(loss_sum / accum, s).item()
            if reduce_mean(bad.float(), s).item() > 0:
                raise FloatingPointError(
                    f"non-finite training loss by step {step}; stopping. The last good checkpoint in {cfg.out_dir} "
                    f"is kept: resume from it with a lower learning rate (--init_from=resume --learning_rate=...)")
            dt = time.time() - t_last - eval_time
            tokens_per_s = s.tokens_per_step * steps_since / dt
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm.item(),
                      "tokens_per_s": tokens_per_s, "time_s": dt / steps_since}
            if first_step_s is not None:
                record["first_step_s"], first_step_s = first_step_s, None
            if peak:
                record["mfu"] = flops * tokens_per_s / (peak * s.world_size)
            if s.device_type == "cuda":  # the peak of this log interval (autotuning's buffers stay in the first)
                record["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                torch.cuda.reset_peak_memory_stats(device)
            if s.master and (step % cfg.log_interval == 0 or last):
                append_jsonl(metrics_path, record)
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{tokens_per_s:,.0f}")
                if not interactive:
                    eta = (cfg.max_iters - step) * dt / steps_since
                    print(f"step {step}/{cfg.max_iters}: loss {loss_value:.4f}, lr {lr:.2e}, "
                          f"{tokens_per_s:,.0f} tokens/s, eta {eta / 60:.1f} min", flush=True)
                if wandb:
                    wandb.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)
            t_last, steps_since, eval_time = time.time(), 0, 0.0
        if step % cfg.ckpt_interval == 0 or last:
            checkpoint(state, cfg, s, run_info["code"])
        if os.environ.get("TRAIN_CRASH_AFTER_STEP") == str(step):  # for the resume tests: a real kill -9
            os.kill(os.getpid(), 9)
    val_loss = evaluate(raw_model, val, cfg, s)
    bar.close()
    if s.master:
        append_jsonl(metrics_path, {"step": step, "val_loss": val_loss})
        print(f"step {step}: val loss {val_loss:.4f}; checkpoints in {cfg.out_dir}")
        if wandb:
            wandb.log({"val/loss": val_loss}, step=step)
            wandb.finish()


# --- the small pieces the steps above use

def reduce_mean(t, s):
    if s.world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.AVG if s.device_type == "cuda" else dist.ReduceOp.SUM)
        if s.device_type != "cuda":  # gloo has no AVG
            t /= s.world_size
    return t


@torch.no_grad()
def evaluate(model, val, cfg, s):
    # the plain model, not the DDP wrapper: the processes may hold different numbers of windows
    model.eval()
    total = torch.zeros(2, device=s.device, dtype=torch.float64)  # (sum of window losses, windows)
    for i in range(0, len(val), cfg.batch_size):
        batch = val[i:i + cfg.batch_size].to(s.device)
        with s.autocast:
            _, loss = model(batch[:, :-1], batch[:, 1:])
        total += torch.stack([loss.double() * len(batch), torch.tensor(len(batch), device=s.device)])
    model.train()
    if s.world_size > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()


def checkpoint(state, cfg, s, code):
    if not all(torch.isfinite(p).all() for p in state.model.parameters()):
        raise FloatingPointError(f"non-finite weights at step {state.step}; not saving. The last good "
                                 f"checkpoint in {cfg.out_dir} is kept")
    rngs = [None] * s.world_size
    if s.world_size > 1:
        dist.all_gather_object(rngs, rng_states(s.device))
    else:
        rngs = [rng_states(s.device)]
    if s.master:
        saved = {"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                 "scaler": state.scaler.state_dict(), "loader": state.loader.state_dict(), "rng": rngs,
                 "step": state.step, "config": asdict(cfg), "model_config": asdict(state.model_config),
                 "world_size": s.world_size, "accum": s.accum, "code": code, "kernel_tiles": state.kernel_tiles}
        save_checkpoint(saved, cfg.out_dir, state.step, keep=cfg.keep_checkpoints)


def model_config_of(cfg):
    """The GPTConfig a training config builds (scripts/preflight.py checks its kernel up front)."""
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd") if getattr(cfg, k)}
    return config_from_preset(
        cfg.model, **shape, block_size=cfg.block_size, vocab_size=cfg.vocab_size, attention=cfg.attention,
        reweight_p=cfg.reweight_p, rope_base=cfg.rope_base, attention_backend=cfg.attention_backend,
        dropout=cfg.dropout, bias=cfg.bias)


def setup_distributed(cfg):
    """(rank, local_rank, world_size, device). torchrun sets RANK/WORLD_SIZE; else one process."""
    ddp = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    try:
        device = pick_device(cfg.device)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if device == "cuda":  # torch.cuda.set_device needs an index: one GPU per local process
        device = f"cuda:{local_rank}"
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if ddp:
        backend = cfg.backend if cfg.backend != "auto" else ("nccl" if device.startswith("cuda") else "gloo")
        dist.init_process_group(backend=backend)
    return rank, local_rank, world_size, device


def lr_at(step, cfg):
    """Linear warm-up to learning_rate, then cosine decay to min_lr at lr_decay_iters."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / cfg.warmup_iters
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    progress = min(1.0, (step - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


def fit_vocabulary(cfg, data_dir):
    """The model's vocabulary follows the data: fill tokenizer="" and vocab_size=0 from the
    shards' meta.json (the size padded to a multiple of 64, which matmuls like). A config that
    names another tokenizer, or a vocabulary too small for the shards', is an error now rather
    than an out-of-range token id later. Both are filled in before anything is saved, so the
    run's config.json and checkpoints record what the model was trained on."""
    tokenizer, n_vocab = shards_tokenizer(data_dir)
    if cfg.tokenizer and cfg.tokenizer != tokenizer:
        raise ConfigError(f"tokenizer={cfg.tokenizer!r} does not fit {data_dir}, whose shards hold {tokenizer} "
                          f"tokens; drop the tokenizer setting, or train on {cfg.tokenizer} shards (dataset/data_dir)")
    if cfg.vocab_size and n_vocab and cfg.vocab_size < n_vocab:
        raise ConfigError(f"vocab_size={cfg.vocab_size} does not fit {data_dir}, whose {tokenizer} shards have "
                          f"{n_vocab} symbols; use vocab_size=0 (the data's) or at least {n_vocab}")
    cfg.tokenizer = tokenizer
    cfg.vocab_size = cfg.vocab_size or -(-(n_vocab or VOCAB_SIZES[tokenizer]) // 64) * 64


def rng_states(device):
    states = {"torch": torch.get_rng_state()}
    if device.startswith("cuda"):
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states, device):
    # RNG states are CPU byte tensors; loading the checkpoint onto the GPU moved them there
    torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and device.startswith("cuda"):
        torch.cuda.set_rng_state(states["cuda"].cpu(), device)


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(path, ckpt_step):
    """On resume, drop what the interrupted run logged after its last checkpoint: the train
    record of the checkpoint's step stays, its validation (logged after) is redone."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    keep = [json.dumps(r) + "\n" for r in records
            if r["step"] < ckpt_step or (r["step"] == ckpt_step and "val_loss" not in r)]
    with open(path + ".tmp", "w") as f:
        f.writelines(keep)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    except EnvError as e:   # a mistyped LSSA_TRITON_* value
        sys.exit(f"error: {e}")
    except DirectoryBusy as e:
        sys.exit(f"error: {e}")
    except ShardError as e:
        sys.exit(f"data error: {e}")
    except FloatingPointError as e:
        sys.exit(f"training stopped: {e}")
