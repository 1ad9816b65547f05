"""Temporary files: named for the process that writes them, removed when it is gone.

Every file shotline writes before it is complete (a download, a stitch, a copy, the local
vendor's renders and job files) is written under a temporary name from :func:`beside`,
``.<name>.<pid>-<random>.part[.ext]``, in the directory of the file it becomes, then
renamed into place. A process removes its own temporary files when a step fails; one
killed outright (SIGKILL, a power cut) cannot, so :func:`sweep` removes, when a process
starts work on a directory, the temporary files of processes that no longer run, and any
older than a day.

The pid is only meaningful on the machine that wrote the file: a store under
``SHOTLINE_HOME`` is one machine's (the scale-out store is object storage, where a
worker's disk is scratch of its own). A pid reused by another process keeps a file until
it is a day old, never removes one still being written.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

MAX_AGE = 86400.0
_NAME = re.compile(r"^\..+\.(?P<pid>[0-9]+)-[0-9a-z_]{8,32}\.part(?:\.[A-Za-z0-9]+)?$")
_swept: set[Path] = set()
_swept_lock = threading.Lock()


def name(base: str, ext: str = "") -> str:
    """A temporary name for ``base``: this process's pid and a random part; ``ext`` keeps
    an extension last for tools that read it (ffmpeg picks a container by it)."""
    return f".{base}.{os.getpid()}-{uuid.uuid4().hex[:12]}.part{ext}"


def beside(final: Path, ext: str = "") -> Path:
    """A temporary path in ``final``'s directory (made if needed), for an atomic rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return final.with_name(name(final.name, ext))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process: leave it
        return True
    return True


def sweep(root: Path, *, now: float | None = None, max_age: float = MAX_AGE,
          recursive: bool = True, prefix: str = "") -> int:
    """Remove the temporary files (and directories) under ``root`` whose process is gone or
    that are older than ``max_age`` seconds; how many were removed. ``recursive=False`` and
    ``prefix`` (a final file's name) narrow it to one file's temporaries in a folder that is
    not ours (where a user asked for an output)."""
    now = time.time() if now is None else now
    removed = 0
    for folder, dirs, files in os.walk(root):
        for entry in [*files, *dirs]:
            m = _NAME.match(entry)
            if m is None or not entry.startswith(f".{prefix}"):
                continue
            path = Path(folder) / entry
            try:
                old = now - path.lstat().st_mtime > max_age
            except FileNotFoundError:
                continue  # its writer renamed or removed it just now
            if old or not _alive(int(m["pid"])):
                if entry in dirs:
                    shutil.rmtree(path, ignore_errors=True)
                    dirs.remove(entry)
                else:
                    path.unlink(missing_ok=True)
                removed += 1
        if not recursive:
            break
    return removed


def sweep_once(root: Path) -> int:
    """:func:`sweep` ``root`` the first time this process asks; later calls cost nothing."""
    with _swept_lock:
        if root in _swept:
            return 0
        _swept.add(root)
    return sweep(root)
