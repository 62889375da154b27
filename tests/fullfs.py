"""Really full and read-only filesystems for the tests: a small tmpfs, and a file-size limit.

Mounting needs root (CI runs as root); elsewhere the tests that need a mount skip and say why.
A file-size limit (RLIMIT_FSIZE) needs no privilege: `limited(n)` sets it in a child process,
with SIGXFSZ ignored so that a write past it fails with EFBIG instead of killing the child.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def tmpfs(folder: Path, size: str = "2m") -> Iterator[Path]:
    """`folder` (created) as a fresh tmpfs of `size`; unmounted afterwards, whatever happened."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root (CI runs the tests as root)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"this machine refuses to mount a tmpfs ({done.stderr.strip() or done.returncode})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the filesystem holding `folder` until about `leave` bytes are free."""
    st = os.statvfs(folder)
    free = st.f_bavail * st.f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(bytes(max(free - leave, 0)))


def read_only(folder: Path) -> None:
    """Remount the tmpfs at `folder` read-only."""
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)


def limited(max_bytes: int) -> Callable[[], None]:
    """A preexec_fn: no file of the child may grow past `max_bytes` (writes then fail with EFBIG)."""

    def set_limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return set_limit


def mslseg(*args: object, cwd: Path | None = None, preexec_fn: Callable[[], None] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m mslseg ARGS` as a user runs it, in its own process."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([sys.executable, "-m", "mslseg", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, preexec_fn=preexec_fn, timeout=timeout)


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str, progress: bool = False) -> str:
    """Exit 1, stderr exactly one line 'error: ...' holding each needle, no traceback; the line.
    `progress`: the command's progress lines (train) come before it on stderr."""
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    if progress:
        assert [line for line in lines if line.startswith("error")] == lines[-1:], done.stderr
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (but the filler) -> its SHA-256: to show that nothing changed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "filler"}


def leftovers(folder: Path) -> list[str]:
    """Temporary and partial names left under `folder` (none may survive a failed write)."""
    return [str(p) for p in folder.rglob("*")
            if ".partial" in p.name or p.name.endswith((".tmp", ".snapshot"))
            or (p.name.startswith(".") and p.is_dir() and p.name != ".done")]
