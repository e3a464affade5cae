"""Atomic file writes: write to a temporary file beside the target, then rename it over the target.

A reader (or a crashed run) therefore sees either the old complete file or the new complete
file, never a half-written one that looks like a result. The temporary file is named
``.<target>.<pid>.<random>.tmp``; one that a killed process left behind is removed by the next
write to the same target (its process no longer exists). An error while writing names the
target, not the temporary file.

A directory written as a unit (``atomic_directory``: an exported model) is built the same way,
as a temporary directory beside the target renamed into place; replacing an existing one
moves the old one aside first and deletes it only once the new one is in place. Errors while
it is written (a full disk, whichever library was writing) name the target too. Both get the
permissions the umask gives a new file or directory, not the temporary files' private ones.

``check_apart`` refuses an output that is, holds or lies inside one of a command's inputs:
replacing it would destroy what the command reads (a run exported over its own directory).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lmcli.errors import LmcliError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; results should be readable like any file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as e:
        if e.errno is not None and e.filename in (None, str(tmp_path)):  # a full disk, say: it is about the target
            raise OSError(e.errno, e.strerror, str(target)) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file for writing; flush, fsync and rename it onto ``target`` on success."""
    with atomic_path(target) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it becomes ``target`` (replacing an
    existing one when ``replace``), on failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = temporary_directory(target)
    try:
        try:
            yield tmp
        except Exception as e:
            raise about_target(e, tmp, target) from None
        if replace and target.exists():
            old = temporary_directory(target)
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def temporary_directory(target: Path) -> Path:
    """A new empty directory beside ``target``, named as the temporary files are, with a new directory's permissions."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
    return tmp


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


NO_SPACE = ("No space left on device", "os error 28", "StorageFull")  # how OSError, Rust (safetensors) and torch say it


def about_target(error: Exception, tmp: Path, target: Path) -> Exception:
    """``error`` raised while writing into ``tmp``, told about ``target``: an OSError names the target's
    file instead of the temporary one, and a full disk reported by a library as its own error is an OSError."""
    if isinstance(error, OSError) and error.errno is not None:
        name = str(error.filename or "")
        shown = str(target / Path(name).relative_to(tmp)) if name.startswith(str(tmp)) else (name or str(target))
        return OSError(error.errno, error.strerror, shown)
    if any(text in str(error) for text in NO_SPACE):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    return error


def check_apart(out: str | os.PathLike, inputs: dict[str, str | os.PathLike], option: str = "--out") -> None:
    """An LmcliError when ``out`` is, contains or lies inside one of ``inputs`` (what each is, -> its path)."""
    written = Path(out).resolve()
    for what, path in inputs.items():
        read = Path(path).resolve()
        if written == read or read.is_relative_to(written) or written.is_relative_to(read):
            relation = "is" if written == read else ("holds" if read.is_relative_to(written) else "lies inside")
            raise LmcliError(f"{option} {out} {relation} {what} {path}, which this command reads: choose another {option}")


def remove_stale_temporaries(target: Path) -> None:
    """Remove the temporary files (and directories) of writes to ``target`` whose process has died (a kill -9, a crash)."""
    for path in target.parent.glob(f".{target.name}.*.tmp"):
        pid = path.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not process_exists(int(pid)):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
