"""The run folder: its name, a writability check before anything is created, one run per folder, starting afresh.

* :func:`check_output_folder` finds out whether a folder can be created and written without creating it, so a
  bad ``--output`` is a one-line error before any work is done.
* :class:`RunFolderLock` is an exclusive ``fcntl.flock`` on ``<folder>/.lock`` held for the whole run. The
  kernel drops the lock when the process ends, however it ends, so a lock left by a crashed or killed run is
  free again: there is no stale state to clean up. The file holds the pid of the run holding it, for the
  message of a second run. It is opened with ``O_NOFOLLOW``: a lock path that is a symlink is refused, so a
  planted link cannot make the run truncate another file.
* :func:`check_no_symlinks` refuses a folder where a run file is a symlink (a planted link would redirect the
  run's writes); atomic writes replace links anyway, and ``log.txt`` is opened with ``O_NOFOLLOW``.
* :func:`clear_run_files` removes what a run wrote (``--overwrite``), nothing else.
"""
from __future__ import annotations

import errno
import fcntl
import io
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..config.schema import RunConfig
from ..errors import ConfigError
from ..files import TEMP_GLOB, write_error
from .model import model_slug

__all__ = [
    "LOCK_NAME",
    "RUN_MARKERS",
    "FolderLockedError",
    "RunFolderLock",
    "check_output_folder",
    "check_not_locked",
    "check_no_symlinks",
    "clear_run_files",
    "open_log",
    "existing_run_files",
    "output_dir",
    "run_name",
]

PathLike = Union[str, os.PathLike]

LOCK_NAME = ".lock"
#: Files whose presence means the folder holds a run (started, interrupted or finished).
RUN_MARKERS = ("config.yaml", "checkpoint.pkl", "progress.json", "results.json", "model.pt")
#: Everything a run writes; ``--overwrite`` removes exactly these.
_RUN_FILES = RUN_MARKERS + ("classes.json", "log.txt", "eval_results.json", "attention_maps.json")
# The figures by their names (report.figures, report.attention): a user's own PNGs in the folder stay.
_RUN_GLOBS = ("accuracy_curves.png", "locality.png", "attention_maps.png", "accuracy_matrix_*.png", TEMP_GLOB)
#: Folders of the file loggers a run writes into (``--overwrite`` removes them with the run's files).
_RUN_FOLDERS = ("tb", "csv")


class FolderLockedError(ConfigError):
    """Another live process holds the run folder's lock."""


def _fields(config: RunConfig, **fixed: Any) -> Dict[str, Any]:
    fields = dict(model=model_slug(config), strategy=config.strategy.name, seed=config.seed)
    fields.update(fixed)
    return {"name": config.name.format(**fields), **fields}


def run_name(config: RunConfig, **fixed: Any) -> str:
    """``name`` with ``{model}``, ``{strategy}`` and ``{seed}`` filled in (``fixed`` overrides a field)."""
    return _fields(config, **fixed)["name"]


def output_dir(config: RunConfig, **fixed: Any) -> Path:
    """The run folder: ``output.dir`` with ``{name}``, ``{model}``, ``{strategy}`` and ``{seed}`` filled in."""
    return Path(config.output.dir.format(**_fields(config, **fixed))).expanduser()


def check_output_folder(folder: PathLike) -> None:
    """Raises :class:`ConfigError` (one line) if ``folder`` cannot be created or written; creates nothing in it.

    The test is a real write, an anonymous temporary file in the folder or its nearest existing parent,
    because permission bits do not tell (root, read-only mounts, ACLs).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"output {folder} is a file, not a folder; choose another --output")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot create output folder {folder}: {existing} is a file; choose another --output")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"cannot write output folder {folder} ({reason} in {existing}); choose another --output") from None


def existing_run_files(folder: PathLike) -> List[str]:
    """The :data:`RUN_MARKERS` present in ``folder``."""
    return [name for name in RUN_MARKERS if (Path(folder) / name).exists()]


def check_no_symlinks(folder: PathLike) -> None:
    """Raises :class:`ConfigError` (one line) if the lock or a file a run writes in ``folder`` is a symlink."""
    folder = Path(folder)
    names = (LOCK_NAME, "tb") + _RUN_FILES
    links = [name for name in names if (folder / name).is_symlink()]
    links += sorted(p.name for pattern in _RUN_GLOBS for p in folder.glob(pattern) if p.is_symlink())
    if links:
        raise ConfigError(
            f"{folder} holds symlinks where the run writes its files ({', '.join(links)}); a run never writes "
            "through a link: remove them, or choose another --output"
        )


def _open_nofollow(path: Path, flags: int) -> int:
    """``os.open`` that refuses a symlink with a one-line :class:`ConfigError` instead of following it."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ConfigError(
                f"{path} is a symlink; a run never opens its files through a link: remove it, or choose another "
                "--output"
            ) from None
        raise


class _LogFile(io.TextIOWrapper):
    """A text log whose failed writes (a full disk) are one-line :class:`~avalanche_lpa.files.WriteError` s."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError as error:
            raise write_error(self.name, error) from None

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as error:
            raise write_error(self.name, error) from None


def open_log(path: PathLike) -> io.TextIOWrapper:
    """Opens ``log.txt`` for appending, never through a symlink (:class:`ConfigError` if it is one)."""
    path = Path(path)
    binary = open(path, "ab", opener=lambda name, flags: _open_nofollow(Path(name), flags))
    return _LogFile(binary, encoding="utf-8", line_buffering=False)


def _holder(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace").strip()
    return f"pid {text}" if text.isdigit() else "pid unknown"


def _locked_message(folder: Path, holder: str) -> str:
    return (
        f"another run is using {folder} ({holder}); wait for it to finish, stop it, or choose another --output"
    )


#: How long a lock attempt waits for a holder to let go: a live run holds the lock for its whole length, a
#: :func:`check_not_locked` probe (another process starting, or another rank of a torchrun job) for microseconds.
_PROBE_PATIENCE_S = 2.0


def _lock_patiently(fd: int) -> bool:
    """``flock(LOCK_EX)`` on ``fd`` if it is free or freed within :data:`_PROBE_PATIENCE_S`; whether it was."""
    deadline = time.monotonic() + _PROBE_PATIENCE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def check_not_locked(folder: PathLike) -> None:
    """Raises :class:`FolderLockedError` if a live run holds ``folder``'s lock; creates nothing."""
    path = Path(folder) / LOCK_NAME
    if path.is_symlink():
        _open_nofollow(path, os.O_RDONLY)  # raises the one-line refusal
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:  # no lock file (or none we can open): nobody to wait for
        return
    try:
        if not _lock_patiently(fd):
            raise FolderLockedError(_locked_message(Path(folder), _holder(fd)))
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class RunFolderLock:
    """Exclusive lock on a run folder (``<folder>/.lock``), as a context manager; creates the folder.

    Raises:
        FolderLockedError: on entry, when another live process holds the lock.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        self._fd: Optional[int] = None

    def acquire(self) -> "RunFolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = _open_nofollow(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT)
        if not _lock_patiently(fd):  # not another process's probe of the lock: a live run
            holder = _holder(fd)
            os.close(fd)
            raise FolderLockedError(_locked_message(self.folder, holder))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        # The file stays: removing it would let a process that opened it just before take a lock on a
        # deleted file while a third one locks a new file of the same name.
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunFolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def clear_run_files(folder: PathLike) -> List[str]:
    """Removes the files a run wrote in ``folder`` (``--overwrite``); returns their names. Other files stay."""
    folder = Path(folder)
    removed = []
    paths = [folder / name for name in _RUN_FILES] + [p for pattern in _RUN_GLOBS for p in folder.glob(pattern)]
    for path in paths:
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path.name)
    for name in _RUN_FOLDERS:  # the CSV logger appends: a new run must not continue the old one's rows
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
            removed.append(name)
    return removed
