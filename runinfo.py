"""What a result needs to be traced (code version, hardware, software, peak FLOPs), and one
process setting that CPU runs need."""
import ctypes
import json
import os
import platform
import subprocess
import sys

import torch

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))

# Dense bf16 tensor-core peak FLOP/s (no sparsity), for MFU. Matched against the CUDA
# device name; first match wins, so the more specific names come first.
PEAK_BF16_FLOPS = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),          # SXM
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
    ("V100", 125e12),          # fp16: V100 has no bf16
    ("T4", 65e12),             # fp16
]


def pick_device(name="auto"):
    """"auto" -> "cuda" when a GPU is visible, else "cpu"; anything else as given, checked."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but this torch sees no CUDA GPU "
                         f"(torch {torch.__version__}); use --device=cpu (or auto)")
    return name


def peak_flops(device):
    """Peak bf16 FLOP/s of a CUDA device, or None (CPU, unknown GPU: no MFU is reported)."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS if key in name), None)


def code_version():
    """{'commit', 'dirty'} of the repository's git checkout ('unknown' outside one)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": "unknown", "dirty": None}
        # uncommitted changes to tracked code; results/ is excluded: the reproduction scripts
        # rewrite its committed files as they go, and those are outputs, not code
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def cpu_model():
    """The processor's name (/proc/cpuinfo on Linux, else what platform reports)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device="cpu"):
    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                    gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
        try:
            import triton
            info["triton"] = triton.__version__
        except ImportError:
            pass
    return info


def write_json(report, path):
    """Write a result as indented JSON, making its directory; say where. Atomically (a temporary
    file renamed into place): scripts/reproduce_paper.sh takes a result file that exists as a
    finished evaluation, so an interrupted write must leave none."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {path}")


def keep_freed_memory():
    """Make glibc keep freed memory for reuse instead of returning it to the OS (Linux only).

    glibc serves every allocation above 32 MB with a fresh mmap and unmaps it on free. A CPU
    training step allocates and frees the (tokens x 50,304) logits and their gradients, so
    each step page-faults in about a gigabyte of new zeroed memory: on 2 cores that was 86 s
    of 112 s (26M page faults) for config/demo_cpu.py, and twice the speed without it. The cost
    is that the process keeps its peak memory, and that blocks of changing sizes can fragment
    the heap (see model.token_losses). KEEP_FREED_MEMORY=0 in the environment leaves glibc's
    defaults: slower, for a machine short of memory, and to measure the setting
    (scripts/bench_memory.py). Returns whether the setting was applied.
    """
    if os.environ.get("KEEP_FREED_MEMORY", "1") == "0":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
