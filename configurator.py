"""
Training configuration: one dataclass of defaults, overridden by config files and --key=value.

    python train.py config/paper_124m.py --attention=lssar --batch_size=16

A config file is plain Python (as in nanoGPT): every top-level name it assigns overrides the
default of the same name, and `include("config/other.py")` pulls in another file first, so a
variant states only what differs. --key=value arguments come last and win. An unknown key or
a value of the wrong type is an error that names the key and the closest valid ones.
"""
import ast
import difflib
import os
from dataclasses import asdict, dataclass, fields

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = "out/{model}-{dataset}-{attention}"   # {key} is filled from this config
    init_from: str = "scratch"          # "scratch" | "resume" (newest checkpoint in out_dir) | "auto" (resume if any)
    elastic_resume: bool = False        # resume on another number of processes (the same tokens per step; not bit-exact)
    eval_interval: int = 250            # steps between validation losses
    eval_iters: int = 20                # validation: eval_iters x batch_size windows, the same for any process count
    log_interval: int = 10              # steps between metrics.jsonl lines
    ckpt_interval: int = 1000           # steps between checkpoints (and one at the end)
    keep_checkpoints: int = 2           # older ones are deleted after a newer one is safe
    wandb_log: bool = False
    wandb_project: str = "lssa-gpt"
    wandb_run_name: str = "{model}-{dataset}-{attention}"
    # data
    dataset: str = "fineweb-10B"        # shards in data/<dataset>/ (python data/prepare.py <dataset>)
    data_dir: str = ""                  # overrides data/<dataset>/
    batch_size: int = 32                # sequences per micro-step per process
    block_size: int = 1024              # the training context
    total_batch_size: int = 524288      # tokens per optimizer step; 0 = one micro-step per process
    tokenizer: str = ""                 # "" = the shards' (their meta.json); "gpt2" | "bytes" must match it
    # model
    model: str = "gpt2-124M"            # a preset of model.PRESETS
    n_layer: int = 0                    # 0 = the preset's
    n_head: int = 0
    n_embd: int = 0
    vocab_size: int = 0                 # 0 = the shards' vocabulary padded to a multiple of 64 (GPT-2: 50304)
    attention: str = "softmax"          # "softmax" | "lssa" | "lssar"
    reweight_p: float = 15.0            # lssar's power p
    rope_base: float = 10000.0
    attention_backend: str = "auto"     # "auto" | "reference" | "kernel"
    dropout: float = 0.0
    bias: bool = True
    # optimizer: AdamW, linear warm-up then cosine decay
    learning_rate: float = 6e-4
    max_iters: int = 18865
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0              # 0 disables clipping
    decay_lr: bool = True
    warmup_iters: int = 700
    lr_decay_iters: int = 0             # 0 = max_iters
    min_lr: float = 0.0
    # system
    device: str = "auto"                # "auto" | "cpu" | "cuda" | "cuda:N"
    dtype: str = "auto"                 # "auto" (bfloat16 on CUDA, else float32) | "float32" | "bfloat16" | "float16"
    compile: bool = True                # torch.compile the model
    tf32: bool = True                   # TF32 matmuls for the fp32 parts on Ampere and later
    backend: str = "auto"               # DDP backend: "auto" (nccl on CUDA, gloo on CPU) | "nccl" | "gloo"
    seed: int = 1337

    def resolve_templates(self):
        """Fill the {key} templates of out_dir and wandb_run_name from the config."""
        values = asdict(self)
        for key in ("out_dir", "wandb_run_name"):
            try:
                setattr(self, key, getattr(self, key).format(**values))
            except KeyError as e:
                where = f"in {key} {getattr(self, key)!r}: {{...}} names a config key"
                raise _unknown_key(e.args[0], values, where) from None
            except (ValueError, IndexError) as e:
                raise ConfigError(f"{key} {getattr(self, key)!r}: bad {{key}} template ({e})") from None
        return self


CHOICES = {
    "init_from": ("scratch", "resume", "auto"),
    "dtype": ("auto", "float32", "bfloat16", "float16"),
    "backend": ("auto", "nccl", "gloo"),
}

# Keys that may change when a run is resumed; every other key must match the checkpoint's.
# The learning rate may, so that a run that diverged can go on from its last good checkpoint,
# and so may the schedule's end, so that a run extended with max_iters can keep its cosine with
# lr_decay_iters (train.py says so when max_iters changes); every change is in launches.jsonl.
# The rest do not change the maths.
RESUMABLE_CHANGES = {"out_dir", "init_from", "elastic_resume", "eval_interval", "eval_iters", "log_interval", "ckpt_interval",
                     "keep_checkpoints", "wandb_log", "wandb_project", "wandb_run_name", "max_iters", "lr_decay_iters",
                     "device", "compile", "backend", "data_dir", "attention_backend", "learning_rate", "min_lr"}


class ConfigError(ValueError):
    pass


def _unknown_key(key, valid, where=""):
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    where = f" {where}" if where else ""
    return ConfigError(f"unknown config key {key!r}{where}{hint} (valid keys are listed in configurator.py: "
                       f"TrainConfig)")


def _check_value(key, value, default):
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not expected:
        raise ConfigError(f"config key {key!r} expects {expected.__name__}, got {type(value).__name__} {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise ConfigError(f"config key {key!r} must be one of {', '.join(CHOICES[key])}; got {value!r}")
    return value


def _exec_config_file(path, namespace, seen):
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} not found (config files live in {os.path.join(REPO_ROOT, 'config')})")
    real = os.path.realpath(path)
    if real in seen:
        raise ConfigError(f"config file {path!r} includes itself")
    seen.add(real)
    namespace["include"] = lambda other: _exec_config_file(
        other if os.path.isabs(other) or os.path.exists(other) else os.path.join(REPO_ROOT, other), namespace, seen)
    with open(path) as f:
        exec(compile(f.read(), path, "exec"), namespace)


def parse_value(text, default):
    """--key=value: a Python literal (1e-3, True, 'x'), or the raw text for a string key."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if isinstance(default, str):
            return text
        example = {bool: "True or False", int: "e.g. 1000", float: "e.g. 3e-4"}.get(type(default), "a Python literal")
        raise ConfigError(f"cannot parse {text!r}: expects {type(default).__name__} ({example})") from None


def load_config(argv, check_model=True):
    """TrainConfig from argv: config files (paths ending in .py) in order, then every
    --key=value override, wherever it stands: the command line wins over the files.
    check_model=False skips the checks that need torch (attention and model names; the rest
    is checked): for a dry run in a shell that has no torch yet."""
    defaults = TrainConfig()
    valid = [f.name for f in fields(TrainConfig)]
    values = {}
    for arg in [a for a in argv if not a.startswith("--")]:
        namespace = {}
        _exec_config_file(arg, namespace, set())
        for key, value in namespace.items():
            if key.startswith("_") or key == "include" or callable(value) or type(value).__name__ == "module":
                continue
            if key not in valid:
                raise ConfigError(f"in {arg}: " + str(_unknown_key(key, valid)))
            values[key] = _check_value(key, value, getattr(defaults, key))
    for arg in [a for a in argv if a.startswith("--")]:
        key, eq, text = arg[2:].partition("=")
        if not eq:
            raise ConfigError(f"expected --key=value, got {arg!r}")
        if key not in valid:
            raise _unknown_key(key, valid)
        try:
            value = parse_value(text, getattr(defaults, key))
        except ConfigError as e:
            raise ConfigError(f"config key {key!r}: {e}") from None
        values[key] = _check_value(key, value, getattr(defaults, key))
    cfg = TrainConfig(**values)
    validate(cfg, check_model)
    return cfg


def validate(cfg, check_model=True):
    """Catch bad settings at load time; the model's with the message of the module that owns them
    (check_model=False: only what needs neither torch nor the tokenizers, for a dry run)."""
    if check_model:
        from attention import check_attention_type, check_backend, check_reweight_p
        from data.tokenizer import VOCAB_SIZES
        from model import PRESETS
        try:
            check_attention_type(cfg.attention)
            check_backend(cfg.attention_backend)
            check_reweight_p(cfg.reweight_p)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if cfg.model not in PRESETS:
            raise ConfigError(f"unknown model {cfg.model!r}; presets are: {', '.join(PRESETS)} "
                              f"(n_layer/n_head/n_embd override a preset's shape)")
        if cfg.tokenizer and cfg.tokenizer not in VOCAB_SIZES:
            raise ConfigError(f"config key 'tokenizer' must be one of {', '.join(VOCAB_SIZES)} (or leave it out: "
                              f"the shards' own); got {cfg.tokenizer!r}")
    if cfg.vocab_size < 0:
        raise ConfigError(f"config key 'vocab_size' must be >= 0 (0: the data's), got {cfg.vocab_size}")
    positive = ("batch_size", "block_size", "max_iters", "eval_interval", "eval_iters", "log_interval",
                "ckpt_interval", "keep_checkpoints")
    for key in positive:
        if getattr(cfg, key) < 1:
            raise ConfigError(f"config key {key!r} must be >= 1, got {getattr(cfg, key)}")


def grad_accum_steps(cfg, world_size):
    """Micro-steps per optimizer step for total_batch_size over world_size processes (1 with 0)."""
    per_step = cfg.batch_size * cfg.block_size * world_size
    if cfg.total_batch_size == 0:
        return 1
    if cfg.total_batch_size % per_step:
        sequences = cfg.total_batch_size / cfg.block_size  # per optimizer step
        fix = ("change batch_size (to a divisor of total_batch_size / block_size / processes = "
               f"{sequences / world_size:g}) or total_batch_size" if sequences % world_size == 0 else
               f"no batch_size fits: use a number of processes that divides total_batch_size / block_size = "
               f"{sequences:g}, or change total_batch_size")
        raise ConfigError(f"total_batch_size={cfg.total_batch_size} is not a multiple of batch_size x block_size x "
                          f"processes = {cfg.batch_size} x {cfg.block_size} x {world_size} = {per_step}; {fix}")
    return cfg.total_batch_size // per_step


def config_diff(a, b, ignore=()):
    """Keys whose values differ between two config dicts."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k not in ignore and a.get(k) != b.get(k)}
