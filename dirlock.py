"""
One writer per directory: train.py (its out_dir), data/prepare.py (its shards' folder) and the
reproduction scripts (their results folder) take an advisory lock, fcntl.flock, on DIR/.lock
for as long as they write there. A second writer started by mistake, or a re-run beside an
orphan of a killed one, is refused with one line naming the process that holds the folder.
The OS drops the lock when the last process holding it exits, however it exits, so a killed run
never blocks its resume (nothing stale to clean up). Standard library only: data/prepare.py and
the shell scripts use it without torch.

    with lock_dir("out/demo-lssar"):   # in Python
        ...
    exec 9<>"$dir/.lock"; python3 dirlock.py "$dir" --fd 9 --pid $$ -- bash scripts/x.sh   # in a shell:
        # the lock belongs to fd 9's open file, so it outlives this python and lasts as long as the shell
"""
import argparse
import fcntl
import os
import shlex
import sys
import time
from contextlib import contextmanager

LOCK_NAME = ".lock"


class DirectoryBusy(RuntimeError):
    """Another process holds the directory's lock."""


# The lock descriptors this process opened. A forked child (a multiprocessing worker of
# prepare.py, a compile worker of train.py) shares them, and would keep the folder locked after
# its parent is killed although it writes nothing there: it closes its copies at once (the
# parent's lock stays). Exec'd children never get them (Python opens files non-inheritable).
_HELD = set()


def _close_in_child():
    for fd in _HELD:
        os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _holders(lock_path):
    """Live processes (pid, command) that have lock_path open, from /proc (Linux; [] elsewhere).
    The recorded pid can be gone while a process it started, which inherited the open file,
    still writes: that one is the holder to name."""
    try:
        target = os.stat(lock_path)
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]
    except OSError:
        return []
    found = []
    for pid in sorted(pids):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(_same_file(f"/proc/{pid}/fd/{fd}", target) for fd in fds):
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found.append((pid, " ".join(a.decode(errors="replace") for a in f.read().split(b"\0") if a)))
        except OSError:   # gone meanwhile, or not ours to read
            continue
    return found


def _same_file(fd_link, target):
    try:
        st = os.stat(fd_link)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino)


def _busy_message(path, lock_path, recorded):
    """One line: who holds the directory and what to do."""
    pid, since, command = (recorded.split("\t", 2) + ["", "", ""])[:3]
    live = _holders(lock_path)
    if live and not any(str(p) == pid for p, _ in live):   # the recorded writer is gone; a child of it holds it
        (pid, command), since = live[0], ""
    who = f"pid {pid or '?'} ({command or 'command unknown'})" + (f", started {since}" if since else "")
    return (f"{path} is being written by {who}; wait for it to finish, or stop it (kill {pid or 'PID'}), "
            f"then run again (the lock goes with the process: the re-run resumes)")


def acquire(path, fd=None, pid=None, command=None):
    """Lock directory `path` (made if missing) for this process, or raise DirectoryBusy naming
    the holder. Returns the lock file's descriptor: closing it (or exiting) releases the lock.
    `fd`: an open descriptor of path/.lock to lock instead (a shell's, which then holds it);
    `pid`, `command`: what to record as the writer (default this process and its argv)."""
    os.makedirs(path, exist_ok=True)
    lock_path = os.path.join(path, LOCK_NAME)
    if fd is None:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        own = True
        _HELD.add(fd)
    else:
        own = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        recorded = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if own:
            release(fd)
        raise DirectoryBusy(_busy_message(path, lock_path, recorded)) from None
    # who writes here, for the message a second writer gets (the lock, not this text, is what counts)
    command = command if command is not None else shlex.join([sys.executable] + sys.argv)
    record = f"{pid or os.getpid()}\t{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\t{command}\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode(), 0)
    return fd


def release(fd):
    """Close a descriptor acquire() opened (the lock goes with it, unless a child shares it)."""
    _HELD.discard(fd)
    os.close(fd)


@contextmanager
def lock_dir(path):
    """`with lock_dir(path):` one writer in path for the block (DirectoryBusy if another has it).
    A folder the block was refused in (bad arguments, say) is not left behind: if this made it and
    nothing but the lock file is in it at the end, both go."""
    made = not os.path.isdir(path)
    fd = acquire(path)
    try:
        yield
    finally:
        os.ftruncate(fd, 0)   # a writer no more: an empty record (a finished run's folder has the same files as before)
        if made and os.listdir(path) == [LOCK_NAME]:
            try:   # still locked here: one that opened the file meanwhile finds its folder gone, and fails
                os.unlink(os.path.join(path, LOCK_NAME))
                os.rmdir(path)
            except OSError:
                pass
        release(fd)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command = argv[argv.index("--") + 1:] if "--" in argv else []   # the script's command, for the record
    p = argparse.ArgumentParser(description="lock a directory for a shell script (see the module's docstring)")
    p.add_argument("dir")
    p.add_argument("--fd", type=int, required=True, help="the shell's open descriptor of DIR/.lock")
    p.add_argument("--pid", type=int, required=True, help="the shell's pid ($$)")
    args = p.parse_args(argv[:len(argv) - len(command) - (1 if "--" in argv else 0)])
    try:
        acquire(args.dir, fd=args.fd, pid=args.pid, command=shlex.join(command))
    except DirectoryBusy as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
