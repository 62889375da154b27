"""Crash-safe file writing: write to a temporary name in the same folder, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from mslseg.runtime.errors import InputError


def _create_temp(final: Path) -> Path:
    """A new, empty hidden file beside `final`. Created with mode 0o666 so the umask applies, as
    for any file the user writes (tempfile.mkstemp would make every output owner-only, 0o600);
    a file being replaced keeps its mode."""
    for _ in range(100):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            if final.is_file():
                os.fchmod(fd, stat.S_IMODE(final.stat().st_mode))
        finally:
            os.close(fd)
        return tmp
    raise FileExistsError(f"no free temporary name beside {final}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, sync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    A kill at any moment leaves either the old file or the new one under `path`, never a torn
    one. On an exception the temporary file is removed and `path` is untouched. `sync=False`
    skips the fsync: still safe against a killed process (the kernel keeps what was written),
    not against a power cut; for many small files that can be regenerated.
    """
    final = Path(path)
    tmp_path = _create_temp(final)
    try:
        yield tmp_path
        if sync:
            with open(tmp_path, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, sync: bool = True) -> Path:
    with atomic_path(path, sync=sync) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def refuse_existing(path: str | os.PathLike[str], overwrite: bool, *, option: str = "--out",
                    folder: bool = False) -> None:
    """The one refusal every command gives an earlier output: InputError when `path` is a file, or
    a folder with anything in it, and `overwrite` is not set. `folder`: `path` is an output folder,
    so a file there is refused even with `overwrite`. Call it before writing anything."""
    p = Path(path)
    if folder and (p.exists() or p.is_symlink()) and not p.is_dir():
        raise InputError(f"{option} {p} is a file; give a folder")
    if overwrite or not (p.exists() or p.is_symlink()):
        return
    if p.is_dir():
        if any(p.iterdir()):
            raise InputError(f"{p} is not empty; pass --overwrite to replace what it holds, "
                             f"or choose another {option}")
        return
    raise InputError(f"{p} already exists; pass --overwrite to replace it, or choose another {option}")
