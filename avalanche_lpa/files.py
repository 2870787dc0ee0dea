"""Atomic file writes: one helper, one permission rule, for checkpoints, results, configs and figures.

A file is written to a temporary file ``.<name>.<random>.tmp`` in its own folder and moved over the target with
``os.replace``, so a crash, a kill or a serialisation error never leaves a half-written file: the previous
version stays until the new one is complete. The new file gets the permissions of the file it replaces, or
those a plain ``open()`` would give (``0o666`` minus the umask), never ``mkstemp``'s private 0600.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Union

__all__ = ["TEMP_GLOB", "atomic_path", "atomic_write_bytes"]

PathLike = Union[str, os.PathLike]

#: Glob of the temporary files :func:`atomic_path` creates (a killed write leaves one behind).
TEMP_GLOB = ".*.tmp"


def _mode_for(path: Path) -> int:
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    On any error (or ``KeyboardInterrupt``) the temporary file is removed and ``path`` is left as it was.
    The folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (flushed to disk before the rename); returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)
