"""train.py launches the fused kernels on one set of tiles for the whole run: rank 0's, pinned in
every process and kept in the checkpoints, so that two ranks, and a run resumed after its table
changed, sum in the same order as one uninterrupted run (train.pin_kernel_tiles).

On the CPU, under Triton's interpreter (tiles are launched as blocks there too), with a stand-in
for a process whose own choice differs (another GPU's table, a table reordered by an update, the
autotuner's pick): its tables put another tile first. Each process records the tiles it launched.
"""
import json
import os
import subprocess
import sys

import pytest

from helpers import tiny_args
from test_kernels import HAS_TRITON
from test_train import train_losses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (see requirements-dev.txt)")

# Runs train.main with the interpreter on, in this process or as one rank of torch.distributed.run.
# argv: repo, record path prefix, which processes get the stand-in table ("", "rank1", "all"), train args
_WRAPPER = r"""
import json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
repo, record, stand_in = sys.argv[1:4]
sys.path.insert(0, repo)
os.chdir(repo)
import train
rank = os.environ.get("RANK", "0")
launched = set()
pin_kernel_tiles = train.pin_kernel_tiles

def with_stand_in(*args):   # triton imported after the process group starts (before, gloo hangs at the end)
    from kernels import lssa_triton
    if stand_in in ("all", "rank" + rank):   # this process's tables put another tile first
        for table in lssa_triton._TABLES.values():
            for key, tiles in table.items():
                table[key] = [(32, 32, 4, 1) if tuple(tiles[0][:2]) == (16, 16) else (16, 16, 4, 1)] + tiles
    pick = lssa_triton._pick

    def recording_pick(which, *a):
        kernel, meta = pick(which, *a)
        launched.add((which, meta["BLOCK_M"], meta["BLOCK_N"]))
        return kernel, meta

    lssa_triton._pick = recording_pick
    return pin_kernel_tiles(*args)

train.pin_kernel_tiles = with_stand_in
train.main(sys.argv[4:])
with open(f"{record}-rank{rank}.json", "w") as f:
    json.dump(sorted(launched), f)
"""


def run(tmp_path, record, stand_in, args, nproc=1, env=None, killed=False):
    """Run the wrapper; the tiles each rank launched (nothing where it is to be killed: kill -9)."""
    script = tmp_path / "wrapper.py"
    script.write_text(_WRAPPER)
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    proc = subprocess.run([sys.executable, *launcher, str(script), REPO, str(tmp_path / record), stand_in, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})})
    assert proc.returncode == (-9 if killed else 0), proc.stdout[-2000:] + proc.stderr[-4000:]
    return [] if killed else [{tuple(x) for x in json.load(open(tmp_path / f"{record}-rank{r}.json"))}
                              for r in range(nproc)]


def first_tiles():
    """What an unchanged table launches for these runs' fp32 inputs at head dim 32 (class 64)."""
    from kernels import lssa_triton
    return {(which, *lssa_triton._TILES_FP32[which, 64][0][:2]) for which in ("fwd", "dkdv", "dq")}


def train_args(synth_dir, out, *extra):
    return tiny_args(synth_dir, out, "--attention=lssar", "--attention_backend=kernel", "--batch_size=2",
                     "--eval_iters=1", "--eval_interval=100", "--log_interval=1", "--ckpt_interval=2", *extra)


@pytest.mark.slow
def test_two_ranks_launch_rank_0s_tiles(synth_dir, tmp_path):
    """Rank 1's own table would launch other tiles; both launch rank 0's, and the run records them."""
    out = tmp_path / "ddp"
    rank0, rank1 = run(tmp_path, "ddp", "rank1", train_args(synth_dir, out, "--max_iters=2"), nproc=2)
    assert rank0 == rank1 == first_tiles()
    run_info = json.load(open(out / "run.json"))
    assert {tuple([k.split("/")[1]] + v[:2]) for k, v in run_info["kernel_tiles"].items()
            if k.startswith("fp32/") and k.endswith("/64")} == first_tiles()


@pytest.mark.slow
def test_resumed_run_launches_the_checkpoints_tiles_and_loses_the_same(synth_dir, tmp_path):
    """A run stopped at step 2 and resumed where the table now puts another tile first launches the
    checkpoint's tiles, and its losses equal, bit for bit, those of a run that never stopped. The
    launched tiles are what this test pins: under the interpreter these tiny runs lose the same on
    16 x 16 tiles as on the table's (seen with the checkpoint's tiles ignored: only the launched
    tiles differed). That the stand-in changes what a fresh run launches: the two-rank test's rank
    1, seen failing there with rank 0's choice not sent."""
    straight = tmp_path / "straight"
    resumed = tmp_path / "resumed"
    [launched] = run(tmp_path, "straight", "", train_args(synth_dir, straight, "--max_iters=3"))
    assert launched == first_tiles()
    run(tmp_path, "first", "", train_args(synth_dir, resumed, "--max_iters=3"), env={"TRAIN_CRASH_AFTER_STEP": "2"},
        killed=True)   # kill -9 after the checkpoint of step 2
    [after] = run(tmp_path, "resume", "all", train_args(synth_dir, resumed, "--max_iters=3", "--init_from=resume"))
    assert after == first_tiles()
    losses = train_losses(resumed)
    assert sorted(losses) == [1, 2, 3] and losses == train_losses(straight)   # floats from JSON: exact equality


# ----------------------------------------------------------------------------- in-process, stand-ins

@pytest.fixture
def lssa_triton(monkeypatch):
    """The kernel module with its pins restored afterwards, as on a GPU of the sm_90 table."""
    from kernels import lssa_triton
    before = lssa_triton.pinned_tiles()
    monkeypatch.setattr(lssa_triton, "_is_hopper", lambda device: True)
    yield lssa_triton
    lssa_triton.pin_tiles(before)


def gpu_setup(world_size=1):
    import types
    return types.SimpleNamespace(device="cuda:0", device_type="cuda", master=True, world_size=world_size)


def test_a_run_pins_its_gpus_tables_or_its_checkpoints(lssa_triton, capsys):
    import train
    from configurator import load_config
    cfg = load_config(["--attention=lssar"])
    tiles = train.pin_kernel_tiles(cfg, gpu_setup(), None)
    assert tiles["sm90/fwd/64"] == list(lssa_triton._TILES_SM90["fwd", 64][0])
    assert tiles["fp32/dkdv/128"] == list(lssa_triton._TILES_FP32["dkdv", 128][0])
    assert len(tiles) == 12 and lssa_triton.pinned_tiles() == tiles
    # a resume: the checkpoint's tiles, even where this table now starts with another
    saved = dict(tiles, **{"sm90/fwd/64": [64, 64, 4, 3]})
    assert train.pin_kernel_tiles(cfg, gpu_setup(), {"kernel_tiles": saved}) == saved
    assert lssa_triton._pick("fwd", __import__("torch").bfloat16, 64, "cuda:0")[1]["BLOCK_M"] == 64
    # ... unless they are another GPU's table's: this GPU's own, with a warning
    other = {k.replace("sm90/", "other/"): v for k, v in saved.items()}
    assert train.pin_kernel_tiles(cfg, gpu_setup(), {"kernel_tiles": other}) == tiles
    assert "another GPU's table (other); this GPU launches its own (sm90)" in capsys.readouterr().out
    both = dict(other, **{"sm90/fwd/64": [64, 64, 4, 3]})   # tiles of two tables: each named
    assert train.pin_kernel_tiles(cfg, gpu_setup(), {"kernel_tiles": both}) == tiles
    assert "another GPU's table (other/sm90); this GPU launches its own (sm90)" in capsys.readouterr().out
    # nothing to pin: no fused kernel in the run
    for args in (["--attention=softmax"], ["--attention=lssar", "--attention_backend=reference"]):
        assert train.pin_kernel_tiles(load_config(args), gpu_setup(), None) is None


def test_the_interpreter_on_a_cpu_pins_tiles_and_a_plain_cpu_run_does_not(lssa_triton, monkeypatch):
    """Triton's interpreter runs the kernels on the CPU (the tests, the demo with TRITON_INTERPRET=1):
    such a run launches tiles like a GPU's and pins them; without it a CPU run launches no kernel."""
    import types
    import train
    from configurator import load_config
    cpu = types.SimpleNamespace(device="cpu", device_type="cpu", master=True, world_size=1)
    lssa_triton.pin_tiles({})
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert train.pin_kernel_tiles(load_config(["--attention=lssa"]), cpu, None) is None
    assert lssa_triton.pinned_tiles() == {}
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    tiles = train.pin_kernel_tiles(load_config(["--attention=lssa"]), cpu, None)
    assert tiles["other/fwd/64"] == list(lssa_triton._TABLES["other"]["fwd", 64][0]) and lssa_triton.pinned_tiles() == tiles


def test_every_rank_launches_the_tiles_rank_0_broadcasts(lssa_triton, monkeypatch):
    """Several processes: rank 0 chooses, torch.distributed broadcasts its choice from rank 0, every
    rank pins what it received (a stand-in for the broadcast: rank 0's tiles differ from this GPU's
    table, as after a resume on tiles an updated table no longer starts with)."""
    import train
    from configurator import load_config
    cfg = load_config(["--attention=lssa"])
    ours = lssa_triton.default_tiles("cuda:0")
    rank0 = dict(ours, **{"sm90/fwd/64": [64, 64, 4, 3]})
    sent = []

    def broadcast(objects, src):
        sent.append((list(objects), src))
        if objects[0] is None:   # a rank other than 0 receives rank 0's
            objects[0] = rank0
    monkeypatch.setattr(train.dist, "broadcast_object_list", broadcast)
    other = gpu_setup(world_size=2)
    other.master = False
    assert train.pin_kernel_tiles(cfg, other, None) == rank0 == lssa_triton.pinned_tiles()
    assert sent == [([None], 0)]
    sent.clear()
    assert train.pin_kernel_tiles(cfg, gpu_setup(world_size=2), None) == ours == lssa_triton.pinned_tiles()
    assert sent == [([ours], 0)]   # rank 0 sends its own
    sent.clear()
    assert train.pin_kernel_tiles(cfg, gpu_setup(world_size=1), None) == ours and sent == []


def test_autotuning_unpins_and_warns(lssa_triton, monkeypatch, capsys):
    import train
    from configurator import load_config
    lssa_triton.pin_tiles({"sm90/fwd/64": [64, 64, 4, 3]})
    monkeypatch.setattr(lssa_triton, "AUTOTUNE", True)
    assert train.pin_kernel_tiles(load_config(["--attention=lssa"]), gpu_setup(), None) is None
    assert lssa_triton.pinned_tiles() == {}
    assert capsys.readouterr().out == ("warning: LSSA_TRITON_AUTOTUNE=1: each process autotunes its own kernel tiles, "
                                       "so the processes, and a resumed run, may sum in different orders (not "
                                       "bit-exact)\n")
    other_rank = gpu_setup(world_size=2)
    other_rank.master = False
    assert train.pin_kernel_tiles(load_config(["--attention=lssa"]), other_rank, None) is None
    assert capsys.readouterr().out == ""   # said once, by rank 0


def test_a_tile_of_one_stage_is_taken(lssa_triton):
    lssa_triton.pin_tiles({"sm90/fwd/64": [64, 64, 4, 1]})   # no software pipelining: a tile the kernels launch
    assert lssa_triton.pinned_tiles() == {"sm90/fwd/64": [64, 64, 4, 1]}


@pytest.mark.parametrize("tiles,message", [
    ({"sm80/fwd/64": [64, 64, 4, 3]}, "TABLE one of sm90, other, fp32"),
    ({"sm90/fwd/96": [64, 64, 4, 3]}, "HEAD_DIM_CLASS 64 or 128"),
    ({"sm90/bwd/64": [64, 64, 4, 3]}, "KERNEL one of fwd, dkdv, dq, HEAD_DIM_CLASS 64 or 128"),
    ({"sm90/fwd/64": [64, 64, 4]}, "expected [BLOCK_M, BLOCK_N, num_warps, num_stages]"),
    ({"sm90/fwd/64": [64, 64, 0, 3]}, "expected [BLOCK_M, BLOCK_N, num_warps, num_stages], positive integers"),
    ({"sm90/fwd/64": [64, 64, -4, 3]}, "expected [BLOCK_M, BLOCK_N, num_warps, num_stages], positive integers"),
    ({"sm90/fwd/64": [64.0, 64, 4, 3]}, "expected [BLOCK_M, BLOCK_N, num_warps, num_stages], positive integers"),
    ({"sm90/fwd/64": [64, 64, True, 3]}, "expected [BLOCK_M, BLOCK_N, num_warps, num_stages], positive integers"),
    ({"sm90/fwd/64": [48, 16, 4, 3]}, "powers of two >= 16"),
    ({"sm90/fwd/64": [8, 8, 4, 3]}, "powers of two >= 16"),
    ({"sm90/fwd/64": [32, 64, 4, 3]}, "the fwd kernel needs BLOCK_M to be a multiple of BLOCK_N"),
    ({"sm90/dkdv/64": [64, 32, 4, 3]}, "the dkdv kernel needs BLOCK_N to be a multiple of BLOCK_M"),
])
def test_bad_tiles_are_refused_in_one_line(lssa_triton, tiles, message):
    lssa_triton.pin_tiles({"sm90/dq/64": [64, 32, 4, 3]})
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")) as caught:
        lssa_triton.pin_tiles(tiles)
    assert "\n" not in str(caught.value) and lssa_triton.pinned_tiles() == {"sm90/dq/64": [64, 32, 4, 3]}


def test_train_main_puts_back_the_tiles_pinned_before_it(synth_dir, tmp_path, monkeypatch):
    """pin_kernel_tiles pins the run's tiles for the whole process; after train.main (also one
    that fails) what runs in-process launches the tiles pinned before it, not the run's."""
    pytest.importorskip("triton")
    import train
    from kernels import lssa_triton
    before = {"other/fwd/64": [32, 32, 4, 2]}
    run_tiles = {"other/fwd/64": [64, 32, 4, 2]}
    monkeypatch.setattr(train, "pin_kernel_tiles", lambda cfg, s, ckpt: lssa_triton.pin_tiles(run_tiles))

    def training_loop(*args):
        assert lssa_triton.pinned_tiles() == run_tiles   # the run's, while it runs
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "training_loop", training_loop)
    lssa_triton.pin_tiles(before)
    try:
        with pytest.raises(KeyboardInterrupt):
            train.main(tiny_args(synth_dir, str(tmp_path / "run")))
        assert lssa_triton.pinned_tiles() == before
    finally:
        lssa_triton.pin_tiles({})


def test_a_mistyped_kernel_variable_stops_train_py_in_one_line(synth_dir, tmp_path):
    pytest.importorskip("triton")
    env = {**os.environ, "LSSA_TRITON_AUTOTUNE": "true", "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "train.py", *tiny_args(synth_dir, str(tmp_path / "run"), "--attention=lssa",
                                                                  "--max_iters=1")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == ("error: LSSA_TRITON_AUTOTUNE='true' is not valid; set it to one "
                                                    "of: 0, 1 (or unset it for the default, 0)")
