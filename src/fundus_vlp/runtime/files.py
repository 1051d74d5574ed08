"""Writing outputs safely: all-or-nothing files and folders (temp + rename), a full disk reported with the file,
the bytes needed and the free space, and modes that follow the user's umask for files made through ``tempfile``
(which uses 0600/0700 so that temporary files are private; a release folder or a cache file is not temporary).

Every writer of results, checkpoints, caches and model folders goes through ``atomic_write``/``atomic_dir``."""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Optional


def current_umask() -> int:
    try:  # Linux: read without changing it (os.umask would, briefly, for every thread)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def chmod_like_new(path: str | Path) -> None:
    """Give ``path`` (and, for a folder, everything in it) the mode a plain ``open``/``mkdir`` would have."""
    mask = current_umask()
    path = Path(path)
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            os.chmod(dirpath, 0o777 & ~mask)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o666 & ~mask)
    else:
        os.chmod(path, 0o666 & ~mask)


# -- atomic writes that survive a full disk -------------------------------------------------------------------
_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# what libraries say when the OS said ENOSPC but they re-raised it as their own error (torch's zip writer:
# "PytorchStreamWriter failed writing file data/0: file write failed")
_DISK_FULL_WORDS = ("no space left on device", "disk quota exceeded", "file write failed")


class DiskFullError(OSError, RuntimeError):
    """A write that did not fit: the message names the file, the bytes it needed and the space that is free.
    The partial file is already removed, so the disk is as full as it was before the write."""

    def __init__(self, path: str | Path, needed: int, free: int, written: int = 0):
        self.path, self.needed, self.free, self.written = Path(path), int(needed), int(free), int(written)
        need = f"about {human_bytes(needed)}" if needed else f"more than the {human_bytes(written)} written"
        super().__init__(errno.ENOSPC, f"{path}: no space left on the device: the file needs {need}, "
                                       f"{human_bytes(free)} free there; the partial file was removed and the "
                                       f"previous version (if any) is untouched. Free some space and run again")

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):  # crosses process pools (``prepare`` workers) with its fields
        return type(self), (self.path, self.needed, self.free, self.written)


def human_bytes(n: int) -> str:
    """``1.5 MiB (1,572,864 bytes)``: readable, and exact for comparing with ``df``."""
    size, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n:,} bytes" if unit == "bytes" else f"{size:.1f} {unit} ({n:,} bytes)"


def free_bytes(path: str | Path) -> int:
    """Free space on the file system that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is the OS saying the disk or the quota is full."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if any(word in str(exc).lower() for word in _DISK_FULL_WORDS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def ensure_free_space(path: str | Path, needed: int) -> None:
    """Refuse before writing when ``needed`` bytes cannot fit beside ``path`` (nothing is written)."""
    free = free_bytes(Path(path).parent)
    if needed > free:
        raise DiskFullError(path, needed, free)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fail(target: Path, tmp: Path, needed: int, exc: BaseException) -> None:
    """Remove the partial output; re-raise a full disk as a DiskFullError that names ``target``."""
    written = _size(tmp)
    _remove(tmp)
    if is_disk_full(exc):
        raise DiskFullError(target, needed, free_bytes(target.parent), written) from exc


def temp_name(path: Path) -> Path:
    """A hidden name beside ``path``, unique to this process (``.<name>.<pid>.tmp``)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def is_temp_name(path: Path) -> bool:
    return path.name.startswith(".") and path.name.endswith(".tmp")


def _open_temp(path: Path, mode: str, encoding: Optional[str]) -> IO:
    return open(path, mode, encoding=encoding)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", needed: int = 0, encoding: Optional[str] = None,
                 keep_mode: bool = False) -> Iterator[IO]:
    """Write ``path`` all or nothing: into a temp file beside it, synced, then renamed over it. On any error the
    temp file is removed and the old ``path`` stays as it was; a full disk raises ``DiskFullError``.
    ``needed``: the expected size, checked against the free space before anything is written."""
    path = Path(path)
    if needed:
        ensure_free_space(path, needed)
    tmp = temp_name(path)
    try:
        with _open_temp(tmp, mode, encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _fail(path, tmp, needed, exc)
        raise


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_write(path, "wb", needed=len(data)) as f:
        f.write(data)


@contextmanager
def atomic_dir(directory: str | Path, needed: int = 0) -> Iterator[Path]:
    """Build a folder all or nothing: the caller fills the yielded temp folder beside ``directory``; on success it
    replaces ``directory`` (modes as a plain ``mkdir`` would give), on any error it is removed (a full disk
    raises ``DiskFullError`` naming ``directory``) and the old ``directory`` stays."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    if needed:
        ensure_free_space(directory, needed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        yield tmp
        chmod_like_new(tmp)  # mkdtemp makes a private 0700 folder; an output folder is shared like any other
        if directory.exists():
            old = temp_name(directory.with_name(directory.name + ".old"))
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException as exc:
        _fail(directory, tmp, needed, exc)
        raise
