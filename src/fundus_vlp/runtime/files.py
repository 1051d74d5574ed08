"""File modes that follow the user's umask, for files and folders made through ``tempfile`` (which uses
0600/0700 so that temporary files are private; a release folder or a cache file is not temporary)."""
from __future__ import annotations

import os
from pathlib import Path


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


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a temporary file in the same folder, sync it, rename it over ``path``: a killed process leaves the old
    file or the new one, never half of one."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        chmod_like_new(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
