"""runinfo.py: the code version recorded with every run and result."""
import io
import os
import platform
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import runinfo


def test_code_version_dirty_means_code_not_results(tmp_path, monkeypatch):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)
    (tmp_path / "results").mkdir()
    (tmp_path / "model.py").write_text("x = 1\n")
    (tmp_path / "results" / "sweep.json").write_text("{}\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    monkeypatch.setattr(runinfo, "REPO_ROOT", str(tmp_path))
    timeouts = []
    run = subprocess.run

    def spy(*args, **kwargs):   # every git call is bounded: a hung git must not hang a training run
        timeouts.append(kwargs.get("timeout"))
        return run(*args, **kwargs)
    monkeypatch.setattr(subprocess, "run", spy)
    clean = runinfo.code_version()
    head = run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True).stdout.decode().strip()
    assert clean == {"commit": head, "dirty": False} and type(clean["commit"]) is str and len(head) == 40
    assert timeouts and all(t is not None and t <= 10 for t in timeouts)
    (tmp_path / "results" / "sweep.json").write_text('{"new": 1}\n')  # a script rewriting its own output
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert runinfo.code_version()["dirty"] is False
    (tmp_path / "model.py").write_text("x = 2\n")
    assert runinfo.code_version()["dirty"] is True


def test_keep_freed_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("KEEP_FREED_MEMORY", "0")  # for a machine short of memory, and for bench_memory.py
    assert runinfo.keep_freed_memory() is False


def test_write_json_leaves_no_file_when_interrupted(tmp_path):
    # reproduce_paper.sh skips an evaluation whose result file exists: a half-written one must not
    path = tmp_path / "sweep" / "lssar.json"
    try:
        runinfo.write_json({"runs": [{"loss": 1.0}, object()]}, str(path))   # fails halfway through
    except TypeError:
        pass
    assert list(tmp_path.rglob("*")) == [tmp_path / "sweep"]
    runinfo.write_json({"runs": []}, str(path))
    assert path.read_text() == '{\n  "runs": []\n}'


def test_code_version_outside_a_checkout_or_without_git(tmp_path, monkeypatch):
    monkeypatch.setattr(runinfo, "REPO_ROOT", str(tmp_path))   # no repository here
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert runinfo.code_version() == {"commit": "unknown", "dirty": None}
    for error in (OSError("no git"), subprocess.TimeoutExpired("git", 10)):
        def run(*args, error=error, **kwargs):
            raise error
        monkeypatch.setattr(subprocess, "run", run)
        assert runinfo.code_version() == {"commit": "unknown", "dirty": None}


def test_pick_device_with_and_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runinfo.pick_device() == "cpu" and runinfo.pick_device("auto") == "cpu"
    assert runinfo.pick_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"^unknown device 'tpu'; use auto, cpu, cuda or cuda:N$"):
        runinfo.pick_device("tpu")
    with pytest.raises(ValueError, match=rf"^device 'cuda:1' was asked for, but this torch sees no CUDA GPU "
                                         rf"\(torch {re.escape(torch.__version__)}\); use --device=cpu \(or auto\)$"):
        runinfo.pick_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # a stand-in for a GPU machine
    assert runinfo.pick_device() == "cuda" and runinfo.pick_device("auto") == "cuda"
    assert runinfo.pick_device("cuda:1") == "cuda:1" and runinfo.pick_device("cpu") == "cpu"


def test_peak_flops_first_matching_name_wins(monkeypatch):
    asked = []
    name = {}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: asked.append(device) or name["now"])
    assert runinfo.peak_flops("cpu") is None and asked == []
    # names as torch reports them; the shorter keys (H100, L4, A10) are inside longer names
    for gpu, flops in (("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
                       ("NVIDIA GH200 480GB", 989e12), ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12),
                       ("NVIDIA A10G", 70e12), ("NVIDIA A10", 125e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                       ("NVIDIA GeForce RTX 4090", 165e12), ("Tesla T4", 65e12), ("AMD Instinct MI300X", None)):
        name["now"] = gpu
        assert runinfo.peak_flops("cuda:1") == flops, gpu
    assert asked[-1] == "cuda:1"


def test_cpu_model_from_proc_cpuinfo_else_platform(monkeypatch):
    def cpuinfo(text):
        def fake_open(path, *args, **kwargs):
            assert path == "/proc/cpuinfo"
            if text is None:
                raise FileNotFoundError(path)
            return io.StringIO(text)
        monkeypatch.setattr(runinfo, "open", fake_open, raising=False)
    cpuinfo("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU: rev 2 @ 2.0GHz \nmodel name\t: second\n")
    assert runinfo.cpu_model() == "Test CPU: rev 2 @ 2.0GHz"
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    for text in (None, "processor\t: 0\n"):   # no /proc/cpuinfo (macOS), or no model name in it
        cpuinfo(text)
        assert runinfo.cpu_model() == "arm"
    monkeypatch.setattr(platform, "processor", lambda: "")
    assert runinfo.cpu_model() == "aarch64"


def test_hardware_of_the_cpu_and_of_a_cuda_stand_in(monkeypatch):
    monkeypatch.setattr(runinfo, "cpu_model", lambda: "Test CPU")
    cpu = {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
           "torch": torch.__version__, "cpu": "Test CPU", "cpu_count": os.cpu_count(), "device": "cpu"}
    assert runinfo.hardware() == cpu and runinfo.hardware(torch.device("cpu")) == cpu
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: asked.append(device) or
                        SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=int(80.46 * 2**30)))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setitem(sys.modules, "triton", SimpleNamespace(__version__="3.9.9"))
    gpu = {**cpu, "device": "cuda:1", "gpu": "NVIDIA H100 80GB HBM3", "gpu_count": 2, "gpu_memory_gib": 80.5,
           "cuda": "12.8", "triton": "3.9.9"}
    assert runinfo.hardware("cuda:1") == gpu and asked == ["cuda:1"]
    monkeypatch.setitem(sys.modules, "triton", None)   # without triton: no version, no error
    del gpu["triton"]
    assert runinfo.hardware("cuda:1") == gpu


def test_keep_freed_memory_sets_glibc_mallopt(monkeypatch):
    calls = []

    class Libc:
        def __init__(self, name):
            calls.append(name)

        def mallopt(self, option, value):
            calls.append((option, value))
            return answers.pop(0)
    monkeypatch.setattr(runinfo.ctypes, "CDLL", Libc)
    monkeypatch.delenv("KEEP_FREED_MEMORY", raising=False)
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    answers = [1, 1]   # mallopt returns 1 on success
    assert runinfo.keep_freed_memory() is True
    # M_MMAP_MAX (-4) = 0: no mmap for large blocks; M_TRIM_THRESHOLD (-1) = 2**31 - 1: never trim the heap
    assert calls == ["libc.so.6", (-4, 0), (-1, 2**31 - 1)]
    monkeypatch.setenv("KEEP_FREED_MEMORY", "1")
    answers, calls[:] = [1, 0], []
    assert runinfo.keep_freed_memory() is False and calls == ["libc.so.6", (-4, 0), (-1, 2**31 - 1)]
    answers, calls[:] = [0, 1], []
    assert runinfo.keep_freed_memory() is False
    calls[:] = []
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))   # Alpine: glibc's options do not apply
    assert runinfo.keep_freed_memory() is False
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    assert runinfo.keep_freed_memory() is False and calls == []


def test_write_json_makes_the_directory_and_says_where(tmp_path, capsys):
    path = str(tmp_path / "a" / "b" / "r.json")
    runinfo.write_json({"x": [1, 2]}, path)
    assert open(path).read() == '{\n  "x": [\n    1,\n    2\n  ]\n}'
    assert capsys.readouterr().out == f"wrote {path}\n"
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["r.json"]
