"""train.py --elastic_resume=True: a checkpoint of 2 processes (gloo) resumed on 1 and on 3, with
the same tokens per optimizer step. Every step after the switch trains on the same windows as the
uninterrupted 2-process run (the loader's position is global), so its loss agrees with that run's
to float rounding (the micro-batches are summed in another order), and the data stream ends at the
same position. Without the opt-in a checkpoint of another layout is refused."""
import json
import os
import shutil

import pytest
import torch

import train
from checkpoint import checkpoint_path, list_checkpoints, load_checkpoint
from configurator import ConfigError
from helpers import tiny_args
from test_train import run_train, train_losses

# 8 x 32 tokens per micro-step and process; 1536 = 6 micro-batches per step: 2 x 3, 1 x 6, 3 x 2
COMMON = ["--max_iters=8", "--ckpt_interval=4", "--log_interval=1", "--eval_interval=4", "--eval_iters=3",
          "--total_batch_size=1536", "--learning_rate=1e-2", "--warmup_iters=2"]


@pytest.fixture(scope="module")
def two_process_run(synth_dir, tmp_path_factory):
    """8 steps on 2 processes, checkpoints at 4 and 8."""
    out = tmp_path_factory.mktemp("elastic") / "two"
    run_train(tiny_args(synth_dir, out, *COMMON), nproc=2)
    return out


def from_step_4(two_process_run, out):
    """A copy of the 2-process run as it stood after its checkpoint at step 4."""
    shutil.copytree(two_process_run, out)
    os.remove(checkpoint_path(out, 8))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("nproc", [1, 3])
def test_resume_on_another_number_of_processes(synth_dir, two_process_run, tmp_path, nproc):
    out = from_step_4(two_process_run, tmp_path / f"on{nproc}")
    args = tiny_args(synth_dir, out, *COMMON, "--init_from=resume", "--elastic_resume=True")
    if nproc == 1:
        train.main(args)  # in this process: no interpreter start-up
    else:
        run_train(args, nproc=nproc)
    expected, got = train_losses(two_process_run), train_losses(out)
    assert sorted(got) == list(range(1, 9))
    for step in range(1, 5):  # before the switch: the 2-process run's own records, kept
        assert got[step] == expected[step]
    for step in range(5, 9):  # after it: the same windows, summed in another order
        assert got[step] == pytest.approx(expected[step], rel=1e-5)
    assert expected[8] < expected[4] - 0.1  # and the run is still learning
    a, b = load_checkpoint(str(two_process_run)), load_checkpoint(str(out))
    assert b["loader"] == a["loader"]  # the stream is where the uninterrupted run's is: nothing skipped or repeated
    assert b["loader"]["index"] == 8 * 6 * 8  # 8 steps x 6 micro-batches x 8 windows
    assert (b["world_size"], b["accum"]) == (nproc, 6 // nproc)
    for name, w in a["model"].items():
        assert torch.allclose(b["model"][name], w, rtol=1e-4, atol=1e-5), name
    launches = [json.loads(line) for line in open(out / "launches.jsonl")]
    assert [(r["world_size"], r["grad_accum_steps"], r["start_step"]) for r in launches] == [(2, 3, 0), (nproc, 6 // nproc, 4)]
    assert launches[-1]["changed_on_resume"]["layout"] == {"checkpoint": "2 processes x 3 micro-steps",
                                                           "now": f"{nproc} processes x {6 // nproc} micro-steps"}


def test_another_layout_needs_the_opt_in_and_the_same_tokens_per_step(synth_dir, two_process_run, tmp_path):
    out = from_step_4(two_process_run, tmp_path / "one")
    with pytest.raises(ConfigError, match="written by 2 processes x 3 micro-steps; resume with the same layout for an "
                                          "exact continuation, or add --elastic_resume=True"):
        train.main(tiny_args(synth_dir, out, *COMMON, "--init_from=resume"))
    with pytest.raises(ConfigError, match="elastic_resume keeps the tokens per optimizer step: .* = 1,536, but now "
                                          "768; use --total_batch_size=1536"):
        train.main(tiny_args(synth_dir, out, *COMMON, "--init_from=resume", "--elastic_resume=True",
                             "--total_batch_size=768"))
    assert [s for s, _ in list_checkpoints(out)] == [4]  # nothing was written
