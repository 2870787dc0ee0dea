"""Atomic file writes: one helper, one permission rule, for checkpoints, results, configs and figures.

A file is written to a temporary file ``.<name>.<random>.tmp`` in its own folder and moved over the target with
``os.replace``, so a crash, a kill or a serialisation error never leaves a half-written file: the previous
version stays until the new one is complete. The new file gets the permissions of the file it replaces, or
those a plain ``open()`` would give (``0o666`` minus the umask), never ``mkstemp``'s private 0600. A symlink
planted at the target is replaced, never written through (``os.replace`` renames over the link itself).

A write that fails (a full disk, a quota, an I/O error) is a :class:`WriteError` whose one-line message names
the file, its folder and the free space there; the temporary file is removed and the previous version stays.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator, Union

from .errors import ConfigError, one_line

__all__ = ["TEMP_GLOB", "WriteError", "atomic_path", "atomic_write_bytes", "free_space", "read_json", "write_error"]

PathLike = Union[str, os.PathLike]

#: Glob of the temporary files :func:`atomic_path` creates (a killed write leaves one behind).
TEMP_GLOB = ".*.tmp"


class WriteError(OSError):
    """A run-folder file could not be written (one line: the file, the folder, the free space, the reason)."""


def free_space(folder: PathLike) -> str:
    """The free space of the filesystem holding ``folder``, human readable (``"unknown"`` if it cannot be read)."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return "unknown"


def write_error(path: PathLike, error: OSError) -> WriteError:
    """The one-line :class:`WriteError` for a failed write of ``path``."""
    path = Path(path)
    reason = error.strerror or one_line(error)
    failure = WriteError(
        f"cannot write {path.name} in {path.parent} ({reason}; {free_space(path.parent)} free there): the previous "
        f"{path.name}, if any, is intact; free some space (or choose another --output) and continue with --resume"
    )
    failure.errno = error.errno  # a single argument keeps str() to the message, without "[Errno n]"
    return failure


def _mode_for(path: Path) -> int:
    if path.exists() and not path.is_symlink():  # a planted link's target says nothing about our file
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; when the block ends without error it replaces ``path``.

    On any error (or ``KeyboardInterrupt``) the temporary file is removed and ``path`` is left as it was; an
    ``OSError`` (full disk, quota, I/O error) becomes a one-line :class:`WriteError`. The folder is created if
    needed.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _mode_for(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        if isinstance(error, OSError) and not isinstance(error, WriteError):
            raise write_error(path, error) from error
        raise


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically (flushed to disk before the rename); returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def read_json(path: PathLike) -> Any:
    """A run folder's JSON file (``results.json``, ``progress.json``, ...).

    Raises:
        ConfigError: the file cannot be read or does not parse (one line: the file, the problem, the fix).
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ConfigError(
            f"{path} is damaged ({one_line(error, kind=True)}); restore it from a backup, or start the run afresh with "
            "--overwrite"
        ) from None
