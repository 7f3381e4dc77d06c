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
"""
import json
import math
import os
import sys
import time
import uuid
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from configurator import REPO_ROOT, RESUMABLE_CHANGES, ConfigError, config_diff, grad_accum_steps, load_config
from data.catalog import shards_tokenizer
from data.shards import ShardError, TrainLoader, load_tokens, val_windows
from data.tokenizer import VOCAB_SIZES
from model import GPT, config_from_preset
from runinfo import code_version, hardware, keep_freed_memory, peak_flops, pick_device


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


def main(argv):
    t_start = time.time()   # for the time to the first step (start-up: building, compiling, autotuning)
    cfg = load_config(argv).resolve_templates()
    rank, local_rank, world_size, device = setup_distributed(cfg)
    master = rank == 0
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device_type == "cuda" else "float32")
    if dtype == "bfloat16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bfloat16; use --dtype=float16 (or float32)")
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    autocast = nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=ptdtype)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
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

    # --- the run directory: refuse to overwrite, or pick up where the last run stopped
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
        ckpt = load_checkpoint(checkpoints[-1][1], map_location=device)
        # elastic: total_batch_size may change with the layout, as long as the tokens per step do not (below)
        changed = config_diff(ckpt["config"], asdict(cfg),
                              ignore=RESUMABLE_CHANGES | ({"total_batch_size"} if cfg.elastic_resume else set()))
        if changed:
            raise ConfigError("cannot resume with a different config: " + ", ".join(
                f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in changed.items()))
        resumed_with = config_diff(ckpt["config"], asdict(cfg), ignore={"init_from"})  # logged in launches.jsonl
        if ckpt["config"]["max_iters"] != cfg.max_iters and not cfg.lr_decay_iters and master:
            print(f"warning: max_iters changed from {ckpt['config']['max_iters']} to {cfg.max_iters}; the cosine "
                  f"schedule now ends at step {cfg.max_iters}. Keep the old schedule with "
                  f"--lr_decay_iters={ckpt['config']['max_iters']}")
        if ckpt["world_size"] != world_size or ckpt["accum"] != accum:
            layout = f"{ckpt['world_size']} processes x {ckpt['accum']} micro-steps"
            if not cfg.elastic_resume:
                raise ConfigError(f"the checkpoint was written by {layout}; resume with the same layout for an exact "
                                  f"continuation, or add --elastic_resume=True to continue on {world_size} process(es) "
                                  f"with the same tokens per step (not bit-exact: see docs/data.md)")
            before = ckpt["accum"] * cfg.batch_size * cfg.block_size * ckpt["world_size"]
            if before != tokens_per_step:
                raise ConfigError(f"elastic_resume keeps the tokens per optimizer step: the checkpoint's {layout} x "
                                  f"{cfg.batch_size} x {cfg.block_size} = {before:,}, but now {tokens_per_step:,}; "
                                  f"use --total_batch_size={before}")
            resumed_with["layout"] = (layout, f"{world_size} processes x {accum} micro-steps")

    # --- model, optimizer, data
    torch.manual_seed(cfg.seed)
    shape = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd") if getattr(cfg, k)}
    model_config = config_from_preset(
        cfg.model, **shape, block_size=cfg.block_size, vocab_size=cfg.vocab_size, attention=cfg.attention,
        reweight_p=cfg.reweight_p, rope_base=cfg.rope_base, attention_backend=cfg.attention_backend,
        dropout=cfg.dropout, bias=cfg.bias)
    model = GPT(model_config).to(device)
    torch.manual_seed(cfg.seed + rank)  # the same init everywhere; dropout differs across ranks
    optimizer = model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device_type)
    loader = TrainLoader(data_dir, cfg.batch_size, cfg.block_size, rank=rank, world_size=world_size,
                         seed=cfg.seed, vocab_size=cfg.vocab_size)
    # A fixed validation set, the same for any number of processes: the first eval_iters x
    # batch_size windows, dealt out across the processes.
    val = load_tokens(data_dir, "val", cfg.vocab_size)
    try:
        val = val_windows(val, cfg.block_size, cfg.eval_iters * cfg.batch_size)
    except ShardError as e:
        raise ShardError(f"{e} (the windows are eval_iters x batch_size = {cfg.eval_iters} x {cfg.batch_size}: "
                         f"lower eval_iters)") from None
    val = torch.from_numpy(np.ascontiguousarray(val[rank::world_size]))
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        loader.load_state_dict(ckpt["loader"])
        if len(ckpt["rng"]) == world_size:
            set_rng_states(ckpt["rng"][rank], device)
        else:  # elastic: dropout's random numbers start afresh (the same on every launch of this layout)
            torch.manual_seed(cfg.seed + rank + 1000 * ckpt["step"])
        step = ckpt["step"]
    if world_size > 1:  # e.g. out_dir not on a filesystem every node sees
        steps = [None] * world_size
        dist.all_gather_object(steps, step)
        if len(set(steps)) > 1:
            raise ConfigError(f"the processes would start from different steps {steps}: out_dir must be on a "
                              f"filesystem every node sees")
    if ckpt is not None:
        if step >= cfg.max_iters:
            if master:
                print(f"{cfg.out_dir} is complete (step {step} of max_iters={cfg.max_iters}); nothing to do")
            if dist.is_initialized():
                dist.destroy_process_group()
            return
    raw_model = model
    if cfg.compile:
        model.check_attention_kernel(device, ptdtype)  # a failing kernel is found before the graph needs it
        model = torch.compile(model)
    if world_size > 1:
        model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)

    # --- what makes a result traceable
    run_info = {"code": code_version(), "hardware": hardware(device), "world_size": world_size, "start_step": step,
                "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                "params": raw_model.num_params(), "grad_accum_steps": accum, "tokens_per_step": tokens_per_step,
                "changed_on_resume": {k: {"checkpoint": a, "now": b} for k, (a, b) in resumed_with.items()}}
    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if master:
        print(json.dumps(asdict(cfg), indent=2))
        print(f"{raw_model.num_params() / 1e6:.2f}M parameters, {world_size} process(es) x {accum} micro-steps x "
              f"{cfg.batch_size} x {cfg.block_size} = {tokens_per_step:,} tokens per step on {device} ({dtype})")
        with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
            json.dump(asdict(cfg), f, indent=2)
        with open(os.path.join(cfg.out_dir, "run.json"), "w") as f:  # this launch
            json.dump(run_info, f, indent=2)
        append_jsonl(os.path.join(cfg.out_dir, "launches.jsonl"), run_info)  # every launch, resumes too
        truncate_metrics(metrics_path, step)
    wandb = None
    if cfg.wandb_log and master:
        import wandb  # imported only when used
        id_path = os.path.join(cfg.out_dir, "wandb_id")  # a resumed run continues the same wandb run
        if not os.path.exists(id_path):
            with open(id_path, "w") as f:
                f.write(uuid.uuid4().hex[:8])
        with open(id_path) as f:
            wandb_id = f.read().strip()
        wandb.init(project=cfg.wandb_project, name=cfg.wandb_run_name, dir=cfg.out_dir, id=wandb_id,
                   config={**asdict(cfg), **run_info}, resume="allow")
    flops = raw_model.flops_per_token(cfg.block_size)["matmul"]
    peak = peak_flops(device)

    def reduce_mean(t):
        if world_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.AVG if device_type == "cuda" else dist.ReduceOp.SUM)
            if device_type != "cuda":  # gloo has no AVG
                t /= world_size
        return t

    @torch.no_grad()
    def evaluate():
        # raw_model, not the DDP wrapper: the processes may hold different numbers of windows
        raw_model.eval()
        total = torch.zeros(2, device=device, dtype=torch.float64)  # (sum of window losses, windows)
        for i in range(0, len(val), cfg.batch_size):
            batch = val[i:i + cfg.batch_size].to(device)
            with autocast:
                _, loss = raw_model(batch[:, :-1], batch[:, 1:])
            total += torch.stack([loss.double() * len(batch), torch.tensor(len(batch), device=device)])
        raw_model.train()
        if world_size > 1:
            dist.all_reduce(total)
        return (total[0] / total[1]).item()

    def checkpoint(step_done):
        if not all(torch.isfinite(p).all() for p in raw_model.parameters()):
            raise FloatingPointError(f"non-finite weights at step {step_done}; not saving. The last good "
                                     f"checkpoint in {cfg.out_dir} is kept")
        rngs = [None] * world_size
        if world_size > 1:
            dist.all_gather_object(rngs, rng_states(device))
        else:
            rngs = [rng_states(device)]
        if master:
            state = {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict(), "loader": loader.state_dict(), "rng": rngs,
                     "step": step_done, "config": asdict(cfg), "model_config": asdict(model_config),
                     "world_size": world_size, "accum": accum, "code": run_info["code"]}
            save_checkpoint(state, cfg.out_dir, step_done, keep=cfg.keep_checkpoints)

    # --- the loop
    from tqdm import tqdm
    interactive = master and sys.stderr.isatty()  # in a log file, plain lines read better than a bar
    bar = tqdm(total=cfg.max_iters, initial=step, disable=not interactive, dynamic_ncols=True, mininterval=1.0)
    bad = torch.zeros((), dtype=torch.bool, device=device)  # any non-finite loss since the last check
    t_last, steps_since, eval_time = time.time(), 0, 0.0
    start_step, first_step_s = step, None
    while step < cfg.max_iters:
        if step % cfg.eval_interval == 0:
            t_eval = time.time()
            val_loss = evaluate()
            eval_time += time.time() - t_eval
            if master:
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
            sync = nullcontext() if (world_size == 1 or micro == accum - 1) else model.no_sync()
            with sync:
                with autocast:
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
        steps_since += 1
        bar.update(1)
        if step == start_step + 1:   # the first step of this process, finished: logged with the next record
            if device_type == "cuda":
                torch.cuda.synchronize(device)
            first_step_s = time.time() - t_start

        last = step == cfg.max_iters
        if step % cfg.log_interval == 0 or last or step % cfg.ckpt_interval == 0:
            loss_value = reduce_mean(loss_sum / accum).item()
            if reduce_mean(bad.float()).item() > 0:
                raise FloatingPointError(
                    f"non-finite training loss by step {step}; stopping. The last good checkpoint in {cfg.out_dir} "
                    f"is kept: resume from it with a lower learning rate (--init_from=resume --learning_rate=...)")
            dt = time.time() - t_last - eval_time
            tokens_per_s = tokens_per_step * steps_since / dt
            record = {"step": step, "loss": loss_value, "lr": lr, "grad_norm": grad_norm.item(),
                      "tokens_per_s": tokens_per_s, "time_s": dt / steps_since}
            if first_step_s is not None:
                record["first_step_s"], first_step_s = first_step_s, None
            if peak:
                record["mfu"] = flops * tokens_per_s / (peak * world_size)
            if device_type == "cuda":  # the peak of this log interval (autotuning's buffers stay in the first)
                record["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                torch.cuda.reset_peak_memory_stats(device)
            if master and (step % cfg.log_interval == 0 or last):
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
            checkpoint(step)
        if os.environ.get("TRAIN_CRASH_AFTER_STEP") == str(step):  # for the resume tests: a real kill -9
            os.kill(os.getpid(), 9)
    val_loss = evaluate()
    bar.close()
    if master:
        append_jsonl(metrics_path, {"step": step, "val_loss": val_loss})
        print(f"step {step}: val loss {val_loss:.4f}; checkpoints in {cfg.out_dir}")
        if wandb:
            wandb.log({"val/loss": val_loss}, step=step)
            wandb.finish()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    except ShardError as e:
        sys.exit(f"data error: {e}")
    except FloatingPointError as e:
        sys.exit(f"training stopped: {e}")
