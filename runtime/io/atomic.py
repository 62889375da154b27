"""Crash-safe file writing: write to a temporary name in the same folder, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from mslseg.runtime.errors import InputError, OutputError

# What the user must fix, not a bug: the disk or quota is full, a file-size limit (ulimit -f; the
# CLI lets such writes fail with EFBIG instead of dying of SIGXFSZ, as CPython does by default),
# a read-only filesystem, a folder mslseg may not write in
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def describe_write_failure(exc: OSError, folder: Path, what: str) -> str | None:
    """'the disk holding FOLDER is full (No space left on device) while writing WHAT; free some space
    or choose another output folder', or None when `exc` is not one of OUTPUT_ERRNOS."""
    reason = exc.strerror or os.strerror(exc.errno or 0)
    why = f"({reason}) while writing {what}"
    if exc.errno == errno.ENOSPC:
        return f"the disk holding {folder} is full {why}; free some space or choose another output folder"
    if exc.errno == errno.EDQUOT:
        return f"the disk quota for {folder} is used up {why}; free some space or choose another output folder"
    if exc.errno == errno.EFBIG:
        return (f"{what} in {folder} grew past the largest file allowed ({reason}: the file-size "
                "limit, ulimit -f, or the filesystem's); raise the limit or choose another output folder")
    if exc.errno == errno.EROFS:
        return f"{folder} is on a read-only filesystem {why}; remount it read-write or choose another output folder"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"mslseg may not write in {folder} {why}; change its permissions or choose another output folder"
    return None


def output_error(exc: OSError, target: Path, *, existed: bool, what: str | None = None) -> OutputError | None:
    """The OutputError for a failed write of `target` (a file or an output folder), saying that
    `target` is unchanged (`existed`) or was not written; None when `exc` is some other OSError."""
    line = describe_write_failure(exc, target.parent, what or target.name)
    if line is None:
        return None
    return OutputError(f"{line}; {target} {'is unchanged' if existed else 'was not written'}")


def discard(path: Path) -> None:
    """Remove a temporary file if it is there. On a read-only disk it cannot be, and unlink says
    EROFS even for a missing file: that must not hide the error being reported."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.EROFS:
            raise


@contextlib.contextmanager
def writing(target: str | os.PathLike[str], *, what: str | None = None) -> Iterator[None]:
    """Turn an OSError of OUTPUT_ERRNOS in the block, which writes `target` (its final name; the
    block writes a temporary one), into an OutputError naming the folder and `what` was written.
    The block must leave `target` as it was on failure, as atomic_path does."""
    target = Path(target)
    existed = target.exists() or target.is_symlink()
    try:
        yield
    except OSError as exc:
        error = output_error(exc, target, existed=existed, what=what)
        if error is None:
            raise
        raise error from exc


# Temporary names, one owner for every writer and every cleanup. All are hidden and beside the final
# name, so a glob of the output never sees them and a rename publishes them on the same filesystem:
#   .NAME.0123abcd.tmp   atomic_path: random, so concurrent writers of one file never share one
#   .NAME.partial        a file or folder that grows while a source runs (labels, areas): fixed, so a
#                        resumed or retried run finds and replaces what a killed one left
#   .STEM.partial.SUFFIX the same, for a video: OpenCV and PyAV choose the container by the suffix
PARTIAL = ".partial"
TEMP_SUFFIX = ".tmp"
TEMP_GLOB = f".*{TEMP_SUFFIX}"  # atomic_path's temporaries in a folder
_TEMP = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")
_PARTIAL = re.compile(r"\.(?P<stem>.+?)\.partial(?P<suffix>\.[^.]+)?")


def temp_name(final: str | os.PathLike[str]) -> Path:
    """A fresh random temporary name beside `final` (atomic_path's)."""
    final = Path(final)
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def partial_name(final: str | os.PathLike[str], *, keep_suffix: bool = False) -> Path:
    """The fixed temporary name of an output that grows (`keep_suffix`: a video, whose writer reads
    the format from the suffix)."""
    final = Path(final)
    if keep_suffix:
        return final.with_name(f".{final.stem}{PARTIAL}{final.suffix}")
    return final.with_name(f".{final.name}{PARTIAL}")


def final_name(path: str | os.PathLike[str]) -> Path | None:
    """The final path a temporary name stands for (None: `path` is not a temporary name)."""
    path = Path(path)
    if match := _TEMP.fullmatch(path.name):
        return path.with_name(match["name"])
    if match := _PARTIAL.fullmatch(path.name):
        return path.with_name(match["stem"] + (match["suffix"] or ""))
    return None


def is_temporary(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a temporary name of any writer (what a cleanup may remove)."""
    return final_name(path) is not None


def temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """The temporary files and folders directly in `folder` (none when it does not exist)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(".*") if is_temporary(p)) if folder.is_dir() else []


def remove_temporary(path: Path) -> None:
    """Remove a temporary file or folder (a PNG folder grows under a partial name) if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        discard(path)


def _create_temp(final: Path) -> Path:
    """A new, empty hidden file beside `final`. Created with mode 0o666 so the umask applies, as
    for any file the user writes (tempfile.mkstemp would make every output owner-only, 0o600);
    a file being replaced keeps its mode."""
    for _ in range(100):
        tmp = temp_name(final)
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
    not against a power cut; for many small files that can be regenerated. A full disk, a
    file-size limit or a read-only folder raises OutputError (see `writing`).
    """
    final = Path(path)
    with writing(final):
        tmp_path = _create_temp(final)
        try:
            yield tmp_path
            if sync:
                with open(tmp_path, "rb+") as f:
                    os.fsync(f.fileno())
            os.replace(tmp_path, final)
        except BaseException:
            discard(tmp_path)
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
