"""dirlock.py: one writer per directory. A second writer is refused naming the first; a killed
holder (even one whose child lives on) never blocks the resume once every holder is gone."""
import os
import signal
import subprocess
import sys
import time

import pytest

import dirlock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a writer that locks DIR, says so, and sleeps until killed
HOLDER = ("import sys, time; sys.path.insert(0, {root!r}); from dirlock import lock_dir\n"
          "with lock_dir(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)")


def start_holder(path, *extra):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=ROOT), str(path), *extra],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_naming_the_first(tmp_path):
    holder = start_holder(tmp_path, "--marker-arg")
    try:
        with pytest.raises(dirlock.DirectoryBusy) as e:
            dirlock.acquire(str(tmp_path))
        msg = str(e.value)
        assert "\n" not in msg and f"pid {holder.pid} (" in msg and "--marker-arg" in msg and f"kill {holder.pid}" in msg
        # the same through a CLI: train.py run by hand beside the holder is refused in one line, before any step
        proc = subprocess.run([sys.executable, "train.py", "config/demo_cpu.py", f"--out_dir={tmp_path}"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [f"error: {msg}"]
        assert not (tmp_path / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_does_not_block_the_resume(tmp_path):
    holder = start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)   # no clean-up runs: the OS drops the lock
    holder.wait()
    assert "\t" in (tmp_path / ".lock").read_text()   # its record is still there, and means nothing
    with dirlock.lock_dir(str(tmp_path)):
        assert (tmp_path / ".lock").read_text().startswith(f"{os.getpid()}\t")
    assert (tmp_path / ".lock").read_text() == ""     # released: no writer recorded
    with dirlock.lock_dir(str(tmp_path)):             # and taken again in the same process
        pass
    # a folder made for the lock, and left empty (the writer stopped on bad arguments), is not left behind
    with pytest.raises(ValueError), dirlock.lock_dir(str(tmp_path / "new")):
        raise ValueError("bad arguments")
    assert sorted(os.listdir(tmp_path)) == [".lock"]


def test_a_shell_holds_the_lock_through_its_fd_and_an_orphan_child_is_named(tmp_path):
    """reproduce_*.sh's way: the shell opens fd 9 and dirlock.py locks it for the shell; a child
    that inherited fd 9 (a training run) keeps the folder after the shell is killed."""
    script = (f'exec 9<>"$1/.lock"; python3 {ROOT}/dirlock.py "$1" --fd 9 --pid $$ -- bash my-script.sh || exit 1; '
              'sleep 600 & echo ready; wait')
    shell = subprocess.Popen(["bash", "-c", script, "sh", str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        assert shell.stdout.readline().strip() == "ready"
        second = subprocess.run(["bash", "-c", script, "sh", str(tmp_path)], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1 and f"pid {shell.pid} (bash my-script.sh)" in second.stderr
        shell.send_signal(signal.SIGKILL)   # the parent dies; its `sleep` child lives on, holding fd 9
        shell.wait()
        with pytest.raises(dirlock.DirectoryBusy, match=r"pid \d+ \(sleep 600\)"):
            dirlock.acquire(str(tmp_path))
    finally:
        os.killpg(shell.pid, signal.SIGKILL)   # the orphan too
    for _ in range(100):   # once the orphan is gone, the folder is free
        try:
            dirlock.release(dirlock.acquire(str(tmp_path)))
            break
        except dirlock.DirectoryBusy:
            time.sleep(0.05)
    else:
        pytest.fail("the lock outlived every process that held it")
