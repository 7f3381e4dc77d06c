"""train.py: configs, the demo config learning, exact resume after kill -9, DDP, errors."""
import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import configurator
import train
from attention import check_attention_type, check_backend, check_reweight_p
from checkpoint import list_checkpoints, load_checkpoint
from configurator import ConfigError, TrainConfig, config_diff, grad_accum_steps, load_config, parse_value
from data.shards import ShardError, write_shard

from helpers import tiny_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def train_losses(out_dir):
    return {r["step"]: r["loss"] for r in read_metrics(out_dir) if "loss" in r}


def run_train(args, env=None, check=True, nproc=None):
    cmd = [sys.executable, "train.py", *args]
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "train.py", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=check,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=300)


def test_demo_config_learns(synth_dir, tmp_path):
    out = tmp_path / "run"
    train.main(tiny_args(synth_dir, out, "--max_iters=40", "--log_interval=5", "--eval_interval=20",
                         "--attention=lssar", "--learning_rate=1e-2"))
    metrics = read_metrics(out)
    losses = [r["loss"] for r in metrics if "loss" in r]
    vals = [r["val_loss"] for r in metrics if "val_loss" in r]
    assert losses[-1] < losses[0] - 1.0 and vals[-1] < vals[0] - 1.0
    assert all(k in metrics[1] for k in ("step", "loss", "lr", "tokens_per_s", "grad_norm"))
    saved = json.load(open(out / "config.json"))
    assert saved["attention"] == "lssar" and saved["model"] == "tiny"
    run = json.load(open(out / "run.json"))
    assert {"code", "hardware", "command"} <= set(run) and "commit" in run["code"]
    ckpt = load_checkpoint(str(out))
    assert ckpt["step"] == 40 and ckpt["model_config"]["attention"] == "lssar"


def test_resume_after_kill_is_exact(synth_dir, tmp_path):
    args = ["--max_iters=12", "--ckpt_interval=4", "--log_interval=1", "--eval_interval=6", "--dropout=0.1"]
    straight = tmp_path / "straight"
    run_train(tiny_args(synth_dir, straight, *args))
    crashed = tmp_path / "crashed"
    proc = run_train(tiny_args(synth_dir, crashed, *args), env={"TRAIN_CRASH_AFTER_STEP": "10"}, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [s for s, _ in list_checkpoints(crashed)] == [4, 8]       # keep_checkpoints=2
    (crashed / "ckpt_000099.pt.tmp").write_bytes(b"half-written")     # a torn write is ignored
    run_train(tiny_args(synth_dir, crashed, *args, "--init_from=resume"))
    expected, got = train_losses(straight), train_losses(crashed)
    assert sorted(got) == list(range(1, 13))
    assert got == expected  # bit-for-bit, dropout included
    vals = lambda d: [(r["step"], r["val_loss"]) for r in read_metrics(d) if "val_loss" in r]
    assert [s for s, _ in vals(crashed)] == [0, 6, 12] and vals(crashed) == vals(straight)
    with open(crashed / "launches.jsonl") as f:  # both launches are on record
        assert [json.loads(line)["start_step"] for line in f] == [0, 8]


def test_torchrun_two_processes_match_one(synth_dir, tmp_path):
    # 2 processes x batch 4 == 1 process x 2 micro-steps x batch 4: the same global batch
    common = ["--max_iters=6", "--log_interval=1", "--eval_interval=100", "--batch_size=4",
              "--total_batch_size=256", "--attention=lssa", "--eval_iters=3"]
    one, two = tmp_path / "one", tmp_path / "two"
    run_train(tiny_args(synth_dir, one, *common))
    run_train(tiny_args(synth_dir, two, *common), nproc=2)
    a, b = train_losses(one), train_losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5)
    # the same 12 validation windows, dealt out 6 + 6 (a full and a partial batch per process)
    val_one, val_two = ([r["val_loss"] for r in read_metrics(d) if "val_loss" in r] for d in (one, two))
    assert len(val_one) == len(val_two) == 2 and val_one == pytest.approx(val_two, rel=1e-5)
    assert json.load(open(two / "run.json"))["world_size"] == 2


def test_paper_configs_token_budget():
    cfg = load_config(["config/paper_124m.py", "--attention=lssar"])
    assert (cfg.model, cfg.dataset, cfg.block_size, cfg.attention) == ("gpt2-124M", "fineweb-10B", 1024, "lssar")
    assert cfg.total_batch_size == 524288 and cfg.max_iters == 18865
    assert cfg.total_batch_size * cfg.max_iters == 9_890_693_120  # ~10B tokens
    assert (cfg.learning_rate, cfg.warmup_iters, cfg.min_lr, cfg.weight_decay, cfg.grad_clip) == (6e-4, 700, 0.0, 0.1, 1.0)
    assert (cfg.beta1, cfg.beta2) == (0.9, 0.95)
    assert [grad_accum_steps(cfg, w) for w in (1, 2, 4, 8)] == [16, 8, 4, 2]
    owt = load_config(["config/paper_124m_owt.py"])
    assert owt.dataset == "openwebtext" and owt.max_iters == cfg.max_iters
    # the fixed validation set (the same for any GPU count) fits OpenWebText's held-out split,
    # every 2000th document: ~4.5M tokens (8M documents, ~9B tokens)
    assert owt.eval_iters * owt.batch_size * 1024 == 655_360
    for name, model in (("350m", "gpt2-350M"), ("774m", "gpt2-774M"), ("1.5b", "gpt2-1.5B")):
        big = load_config([f"config/paper_{name}.py"])
        assert big.model == model and big.total_batch_size == 524288
        assert grad_accum_steps(big, 8) * 8 * big.batch_size * 1024 == 524288
    # each config names its own runs (an included config's out_dir must not leak into another's)
    for name in ("paper_124m", "paper_124m_owt", "paper_350m", "paper_774m", "paper_1.5b"):
        assert load_config([f"config/{name}.py"]).resolve_templates().out_dir == f"out/{name}-softmax"


def test_command_line_wins_over_config_files_in_any_order():
    assert load_config(["--batch_size=8", "config/paper_124m.py"]).batch_size == 8
    assert load_config(["config/paper_124m.py", "--batch_size=8"]).batch_size == 8


def test_lr_schedule():
    cfg = load_config(["config/paper_124m.py"])
    assert train.lr_at(0, cfg) == pytest.approx(6e-4 / 700)
    assert train.lr_at(699, cfg) == pytest.approx(6e-4)
    assert train.lr_at(18865, cfg) == pytest.approx(0.0, abs=1e-12)
    mid = 700 + (18865 - 700) // 2
    assert train.lr_at(mid, cfg) == pytest.approx(3e-4, rel=1e-3)


@pytest.mark.parametrize("argv, message", [
    (["--learning_rat=1e-3"], "unknown config key 'learning_rat'; did you mean learning_rate"),
    (["--max_iters=ten"], "'max_iters'.*cannot parse"),
    (["--max_iters=1.5"], "'max_iters' expects int, got float"),
    (["--compile=1"], "'compile' expects bool"),
    (["--dtype=fp8"], "'dtype' must be one of auto, float32, bfloat16, float16"),
    (["config/nope.py"], "config file 'config/nope.py' not found"),
    (["--max_iters"], "expected --key=value"),
    (["--compile=yes"], "'compile': cannot parse 'yes': expects bool \\(True or False\\)"),
    (["--out_dir=out/{atention}"], "unknown config key 'atention' in out_dir 'out/{atention}'.*did you mean attention"),
    (["--wandb_run_name={"], "wandb_run_name '{': bad {key} template"),
    (["--tokenizer=chars"], "'tokenizer' must be one of gpt2, bytes .or leave it out"),
    (["--vocab_size=-1"], "'vocab_size' must be >= 0"),
])
def test_config_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        load_config(argv).resolve_templates()


def test_unknown_key_in_config_file(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("include('config/paper_124m.py')\nbatchsize = 8\n")
    with pytest.raises(ConfigError, match=r"bad.py.*unknown config key 'batchsize'; did you mean batch_size"):
        load_config([str(path)])


def config_error(argv, check_model=True):
    with pytest.raises(ConfigError) as e:
        load_config(argv, check_model).resolve_templates()
    return str(e.value)


def test_config_values_and_their_errors_word_for_word():
    cfg = load_config(["--learning_rate=1", "--min_lr=0", "--dataset=openwebtext", "--wandb_project='x y'"])
    assert (cfg.learning_rate, cfg.min_lr, cfg.dataset, cfg.wandb_project) == (1.0, 0.0, "openwebtext", "x y")
    assert type(cfg.learning_rate) is float and type(cfg.min_lr) is float   # an int given for a float key
    assert config_error(["--learning_rate=True"]) == "config key 'learning_rate' expects float, got bool True"
    assert config_error(["--max_iters=ten"]) == "config key 'max_iters': cannot parse 'ten': expects int (e.g. 1000)"
    assert config_error(["--min_lr=low"]) == "config key 'min_lr': cannot parse 'low': expects float (e.g. 3e-4)"
    with pytest.raises(ConfigError, match=r"^cannot parse 'x': expects list \(a Python literal\)$"):
        parse_value("x", [])
    assert config_error(["--max_iters"]) == "expected --key=value, got '--max_iters'"
    assert load_config(["--wandb_run_name=a=b"]).wandb_run_name == "a=b"   # the first "=" ends the key
    with pytest.raises(ConfigError, match="^unknown model 'gpt5'"):   # validate checks the model unless told not to
        configurator.validate(TrainConfig(model="gpt5"))
    assert config_error(["--dtype=fp8"]) == ("config key 'dtype' must be one of auto, float32, bfloat16, float16; "
                                             "got 'fp8'")
    assert config_error(["--zzz=1"]) == ("unknown config key 'zzz' (valid keys are listed in configurator.py: "
                                         "TrainConfig)")
    # the three closest of the eight keys close to it
    assert config_error(["--eval_iter=1"]) == ("unknown config key 'eval_iter'; did you mean eval_iters, eval_interval, "
                                               "max_iters? (valid keys are listed in configurator.py: TrainConfig)")
    assert config_error(["--out_dir=out/{0}"]).startswith("out_dir 'out/{0}': bad {key} template (")   # IndexError
    # the positive keys, each at 0 (1 is fine)
    for key in ("batch_size", "block_size", "max_iters", "eval_interval", "eval_iters", "log_interval",
                "ckpt_interval", "keep_checkpoints"):
        assert config_error([f"--{key}=0"]) == f"config key {key!r} must be >= 1, got 0"
        assert getattr(load_config([f"--{key}=1"]), key) == 1
    assert load_config(["--vocab_size=0", "--tokenizer=bytes"]).tokenizer == "bytes"
    assert config_error(["--model=gpt5"]) == ("unknown model 'gpt5'; presets are: gpt2-124M, gpt2-350M, gpt2-774M, "
                                              "gpt2-1.5B, small, mini, micro, tiny (n_layer/n_head/n_embd override "
                                              "a preset's shape)")
    # without torch (a dry run): the model's own checks are left to train.py, the rest stay
    assert load_config(["--attention=nope", "--model=gpt5", "--tokenizer=chars"], check_model=False).model == "gpt5"
    assert config_error(["--attention=nope", "--max_iters=0"], check_model=False) == ("config key 'max_iters' "
                                                                                     "must be >= 1, got 0")
    # with it, attention.py's own messages, as ConfigErrors
    for bad, check in ((["--attention=nope"], lambda: check_attention_type("nope")),
                       (["--attention_backend=fast"], lambda: check_backend("fast")),
                       (["--reweight_p=-1"], lambda: check_reweight_p(-1.0))):
        with pytest.raises(ValueError) as own:
            check()
        assert config_error(bad) == str(own.value)


def test_templates_of_out_dir_and_wandb_run_name():
    cfg = load_config(["--attention=lssar", "--out_dir=runs/{attention}-{block_size}",
                       "--wandb_run_name={model}/{seed}"]).resolve_templates()
    assert (cfg.out_dir, cfg.wandb_run_name) == ("runs/lssar-1024", "gpt2-124M/1337")
    assert load_config([]).resolve_templates().wandb_run_name == "gpt2-124M-fineweb-10B-softmax"
    assert config_error(["--wandb_run_name={atention}"]) == (
        "unknown config key 'atention' in wandb_run_name '{atention}': {...} names a config key; did you mean "
        "attention, attention_backend, dataset? (valid keys are listed in configurator.py: TrainConfig)")


def test_config_files_include_and_skip_what_is_not_a_key(tmp_path, monkeypatch):
    base = tmp_path / "base.py"
    base.write_text("batch_size = 4\nmax_iters = 7\n")
    variant = tmp_path / "variant.py"
    # include() by a path that exists from here (the working directory), or relative to the repository
    variant.write_text(f"include({os.path.relpath(base)!r})\ninclude('config/paper_124m_owt.py')\nimport math\n"
                       "_private = 3\ndef helper():\n    return 1\nbatch_size = math.floor(8.5)\n")
    cfg = load_config([str(variant)])
    assert (cfg.batch_size, cfg.dataset, cfg.max_iters) == (8, "openwebtext", 18865)
    # a relative path that does not exist from here is the repository's (here a stand-in for it)
    (tmp_path / "repo" / "config").mkdir(parents=True)
    (tmp_path / "repo" / "config" / "inc.py").write_text("eval_iters = 3\n")
    (tmp_path / "uses.py").write_text(f"include({os.path.relpath(base)!r})\ninclude('config/inc.py')\n")
    monkeypatch.setattr(configurator, "REPO_ROOT", str(tmp_path / "repo"))
    cfg = load_config([str(tmp_path / "uses.py")])
    assert (cfg.batch_size, cfg.eval_iters, cfg.max_iters) == (4, 3, 7)
    monkeypatch.undo()
    loop = tmp_path / "loop.py"
    loop.write_text(f"include({str(loop)!r})\n")
    assert config_error([str(loop)]) == f"config file {str(loop)!r} includes itself"
    assert config_error(["nope.py"]) == (f"config file 'nope.py' not found (config files live in "
                                         f"{os.path.join(configurator.REPO_ROOT, 'config')})")
    (tmp_path / "bad.py").write_text("learning_rat = 1e-3\n")
    assert config_error([str(tmp_path / "bad.py")]) == (
        f"in {tmp_path / 'bad.py'}: unknown config key 'learning_rat'; did you mean learning_rate? "
        "(valid keys are listed in configurator.py: TrainConfig)")
    (tmp_path / "typed.py").write_text("compile = 'yes'\n")
    assert config_error([str(tmp_path / "typed.py")]) == "config key 'compile' expects bool, got str 'yes'"


def test_grad_accum_steps_and_its_two_fixes():
    cfg = TrainConfig(batch_size=4, block_size=8, total_batch_size=96)   # 12 sequences per optimizer step
    assert grad_accum_steps(cfg, 1) == 3 and grad_accum_steps(cfg, 3) == 1
    assert type(grad_accum_steps(cfg, 1)) is int   # a count of micro-steps: train.py loops over range() of it
    assert grad_accum_steps(TrainConfig(batch_size=4, block_size=8, total_batch_size=0), 5) == 1
    with pytest.raises(ConfigError) as e:
        grad_accum_steps(cfg, 2)
    assert str(e.value) == ("total_batch_size=96 is not a multiple of batch_size x block_size x processes = 4 x 8 x 2 "
                            "= 64; change batch_size (to a divisor of total_batch_size / block_size / processes = 6) "
                            "or total_batch_size")
    with pytest.raises(ConfigError) as e:
        grad_accum_steps(cfg, 5)
    assert str(e.value) == ("total_batch_size=96 is not a multiple of batch_size x block_size x processes = 4 x 8 x 5 "
                            "= 160; no batch_size fits: use a number of processes that divides total_batch_size / "
                            "block_size = 12, or change total_batch_size")


def test_config_diff():
    diff = config_diff({"x": 1, "y": 2, "z": 3}, {"x": 1, "y": 5, "z": 4, "w": 0}, ignore=("z",))
    assert diff == {"w": (None, 0), "y": (2, 5)} and list(diff) == ["w", "y"]


def test_run_errors_are_clear(synth_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown attention type 'softplus'.*softmax, lssa, lssar"):
        train.main(tiny_args(synth_dir, tmp_path / "x", "--attention=softplus"))
    with pytest.raises(ConfigError, match="has no checkpoint; start with --init_from=scratch"):
        train.main(tiny_args(synth_dir, tmp_path / "y", "--init_from=resume"))
    with pytest.raises(ConfigError, match="not a multiple of batch_size x block_size x processes"):
        train.main(tiny_args(synth_dir, tmp_path / "z", "--total_batch_size=1000"))
    with pytest.raises(ConfigError, match="unknown model 'gpt5'"):
        train.main(tiny_args(synth_dir, tmp_path / "z", "--model=gpt5"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda' was asked for, but this torch sees no CUDA GPU"):
            train.main(tiny_args(synth_dir, tmp_path / "z", "--device=cuda"))
    with pytest.raises(ShardError, match="validation set has 20,000 tokens.*eval_iters x batch_size = 1000 x 8: lower eval_iters"):
        train.main(tiny_args(synth_dir, tmp_path / "u", "--eval_iters=1000"))
    bad = tmp_path / "bad-val"  # good train shard, validation made with another tokenizer
    bad.mkdir()
    shutil.copy(os.path.join(synth_dir, "synth_train_000001.bin"), bad)
    write_shard(bad / "synth_val_000000.bin", np.full(20_000, 60000))
    with pytest.raises(ShardError, match="synth_val_000000.bin: token id 60000 is not below vocab_size 97"):
        train.main(tiny_args(str(bad), tmp_path / "v"))
    # on the command line: one line naming the problem and the fix, no traceback
    proc = run_train(tiny_args(str(tmp_path / "missing"), tmp_path / "w"), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("data error:") and "python data/prepare.py" in proc.stderr


def test_scratch_never_overwrites_and_resume_checks_config(synth_dir, tmp_path):
    out = tmp_path / "run"
    train.main(tiny_args(synth_dir, out, "--max_iters=2", "--ckpt_interval=2"))
    with pytest.raises(ConfigError, match="already holds checkpoints.*--init_from=resume"):
        train.main(tiny_args(synth_dir, out, "--max_iters=2"))
    with pytest.raises(ConfigError, match="different config: attention"):
        train.main(tiny_args(synth_dir, out, "--max_iters=4", "--init_from=resume", "--attention=lssa"))
    train.main(tiny_args(synth_dir, out, "--max_iters=4", "--init_from=resume"))  # max_iters may grow
    assert list_checkpoints(out)[-1][0] == 4
    # so may the learning rate (to go on after a divergence); the change is logged with the launch
    train.main(tiny_args(synth_dir, out, "--max_iters=5", "--init_from=resume", "--learning_rate=1e-4"))
    launches = [json.loads(line) for line in open(out / "launches.jsonl")]
    assert launches[-1]["changed_on_resume"]["learning_rate"] == {"checkpoint": 3e-3, "now": 1e-4}
    assert launches[-2]["changed_on_resume"]["max_iters"] == {"checkpoint": 2, "now": 4}
    assert list_checkpoints(out)[-1][0] == 5
    lines = len(read_metrics(out))
    train.main(tiny_args(synth_dir, out, "--max_iters=5", "--init_from=auto"))  # complete: nothing to do
    assert len(read_metrics(out)) == lines and list_checkpoints(out)[-1][0] == 5
    fresh = tmp_path / "fresh"
    train.main(tiny_args(synth_dir, fresh, "--max_iters=2", "--init_from=auto"))  # nothing there: from scratch
    assert list_checkpoints(fresh)[-1][0] == 2


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(synth_dir, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="non-finite"):
        train.main(tiny_args(synth_dir, out, "--max_iters=20", "--ckpt_interval=1", "--log_interval=1",
                             "--learning_rate=1e30", "--warmup_iters=0", "--decay_lr=False", "--grad_clip=0.0"))
    ckpts = list_checkpoints(out)
    assert ckpts and ckpts[-1][0] < 20
    state = load_checkpoint(str(out))["model"]
    assert all(torch.isfinite(v).all() for v in state.values())
    proc = run_train(tiny_args(synth_dir, tmp_path / "cli", "--max_iters=20", "--learning_rate=1e30",
                               "--warmup_iters=0", "--decay_lr=False", "--grad_clip=0.0"), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("training stopped: non-finite") and "--learning_rate=" in proc.stderr


def test_wandb_offline_writes_files(synth_dir, tmp_path):
    import wandb  # noqa: F401 - in requirements.txt: a broken install fails here rather than skipping
    out = tmp_path / "run"
    run_train(tiny_args(synth_dir, out, "--max_iters=2", "--wandb_log=True"), env={"WANDB_MODE": "offline"})
    assert glob.glob(str(out / "wandb" / "offline-run-*" / "*.wandb"))
    run_id = (out / "wandb_id").read_text()
    run_train(tiny_args(synth_dir, out, "--max_iters=4", "--wandb_log=True", "--init_from=resume"),
              env={"WANDB_MODE": "offline"})
    assert (out / "wandb_id").read_text() == run_id  # the resumed run logs to the same wandb run
    assert len(glob.glob(str(out / "wandb" / f"offline-run-*-{run_id}"))) == 2


def test_checkpoint_from_a_compiled_model_loads(trained_runs, tmp_path):
    """torch.compile saves keys as `_orig_mod.<name>`; loading strips the prefix."""
    from checkpoint import load_model
    ckpt = torch.load(list_checkpoints(trained_runs["lssa"])[-1][1], weights_only=True)
    ckpt["model"] = {f"_orig_mod.{k}": v for k, v in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "ckpt_000030.pt")
    model, loaded = load_model(str(tmp_path))
    reference, _ = load_model(trained_runs["lssa"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    assert loaded["step"] == 30


def test_override_that_needs_missing_weights_is_a_clear_error(trained_runs):
    from checkpoint import load_model
    with pytest.raises(ValueError, match="only an ssmax checkpoint can be evaluated as ssmax"):
        load_model(trained_runs["softmax"], attention="ssmax")
    model, _ = load_model(trained_runs["softmax"], attention="softmax_reweight")  # no new weights: fine
    assert model.config.attention == "softmax_reweight"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_after_kill_on_gpu(synth_dir, tmp_path):
    """On a GPU: a bare device="cuda", bf16 autocast, and resuming from a checkpoint loaded onto
    the GPU (its RNG states included) continue the run; losses agree to floating-point noise."""
    args = ["--max_iters=8", "--ckpt_interval=4", "--log_interval=1", "--eval_interval=100", "--device=cuda",
            "--dtype=bfloat16", "--attention=lssar"]
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    run_train(tiny_args(synth_dir, straight, *args))
    proc = run_train(tiny_args(synth_dir, crashed, *args), env={"TRAIN_CRASH_AFTER_STEP": "6"}, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    run_train(tiny_args(synth_dir, crashed, *args, "--init_from=resume"))
    expected, got = train_losses(straight), train_losses(crashed)
    assert sorted(got) == list(range(1, 9))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-3)
    # each record's peak memory is its own interval's: the tiny model's few MiB, not a running maximum
    # that only grows; the time to the first step is logged once per launch
    records = [json.loads(line) for line in open(straight / "metrics.jsonl") if '"loss"' in line]
    assert all(0 < r["peak_mem_gib"] < 1 for r in records)
    assert ["first_step_s" in r for r in records] == [True] + [False] * 7
