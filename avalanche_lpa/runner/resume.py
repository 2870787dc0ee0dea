"""Reading a run folder back: its config, whether it holds a run, whether that run is finished, and whether a
``--resume`` / ``--eval-only`` describes the same experiment."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from ..config.diff import HARMLESS_KEYS, config_differences, leaves
from ..config.files import read_run_yaml
from ..config.schema import RunConfig
from ..config.upgrade import upgrade_config
from ..config.validation import validate
from ..errors import ConfigError
from ..files import read_json
from ..report import read_results
from .folder import existing_run_files

__all__ = [
    "check_checkpoint_config", "check_existing_run", "check_same_experiment", "finished_run", "read_progress",
    "read_run_config",
]


def _validated(raw: Mapping[str, Any], folder: os.PathLike) -> RunConfig:
    """``raw`` (a run folder's ``config.yaml`` as read) validated; an error names the file."""
    try:
        return validate(raw)
    except ConfigError as error:
        raise ConfigError(f"{Path(folder) / 'config.yaml'} is not a valid config ({error}); fix it, or start the run "
                          "afresh with --overwrite") from None


def read_run_config(folder: os.PathLike) -> Optional[RunConfig]:
    """The validated ``config.yaml`` of a run folder, ``None`` if there is none.

    Raises:
        ConfigError: the file is not a valid config (one line naming it).
    """
    raw = read_run_yaml(folder)
    return None if raw is None else _validated(raw, folder)


def check_same_experiment(folder: Path, config: RunConfig, what: str) -> None:
    """A ``--resume`` / ``--eval-only`` config may differ from the folder's ``config.yaml`` in harmless keys only.

    The file holds a validated config with every key, so it is compared as written; one from an older version
    that lacks keys of today's schema is validated first (its defaults filled in).
    """
    raw = read_run_yaml(folder)
    if raw is None:
        return
    saved: Any = upgrade_config(raw)
    if set(leaves(config)) - set(leaves(saved)):
        saved = _validated(raw, folder)  # the file as read above, not read again
    changed = config_differences(saved, config, ignore=HARMLESS_KEYS)
    if changed:
        raise ConfigError(
            f"{what} uses the config {folder} was started with (config.yaml); these settings differ from it: "
            f"{', '.join(changed)}; drop the flags that change them (only {', '.join(HARMLESS_KEYS)} may differ), "
            "or start a new run with another --output or --overwrite"
        )


def check_existing_run(folder: Path, config: RunConfig, resume: bool) -> None:
    """Without ``resume`` a folder that holds a run is refused; with it, the run must be the same experiment."""
    holds = existing_run_files(folder)
    if holds and not resume:
        raise ConfigError(
            f"{folder} already holds a run ({', '.join(holds)}); pass --resume to continue it, --overwrite to start "
            "it afresh (deletes its files), or choose another --output"
        )
    if resume:
        check_same_experiment(folder, config, "--resume")


def finished_run(folder: Path) -> Optional[str]:
    """What a finished run in ``folder`` reports (``None`` when the folder holds no finished run).

    ``results.json`` is written last, once every output is complete, so its presence marks a finished run.

    Raises:
        ConfigError: the file is damaged (one line).
    """
    path = Path(folder) / "results.json"
    if not path.is_file():
        return None
    results = read_results(path)
    summary = results.get("summary") or {}
    steps = len(results.get("accuracy_matrix") or [])
    return (f"{steps} experiences, avg incremental accuracy {summary.get('avg_incremental_accuracy', float('nan')):.4f}, "
            f"last accuracy {summary.get('last_accuracy', float('nan')):.4f}")


def read_progress(folder: Path, start: int) -> Dict[str, Any]:
    """``progress.json`` of a run being resumed, checked against the checkpoint's experience ``start``."""
    progress = read_json(folder / "progress.json")
    if not isinstance(progress, dict) or not isinstance(progress.get("finished_experiences"), int):
        raise ConfigError(f"{folder / 'progress.json'} is damaged (no finished_experiences); start the run "
                          "afresh with --overwrite")
    if progress["finished_experiences"] != start:
        raise ConfigError(f"{folder}: progress.json and checkpoint.pkl disagree; start the run afresh with --overwrite")
    progress.pop("inside_experience", None)
    progress.setdefault("phase_times_s", [])  # a run started before the phase timer existed
    return progress


def check_checkpoint_config(plugin: Any, config: RunConfig, folder: Path) -> Optional[Dict[str, Any]]:
    """The checkpoint's position; a config that differs from the one the checkpoint was made with is an error."""
    if plugin.run_config is not None:
        changed = config_differences(plugin.run_config, config, ignore=HARMLESS_KEYS, common_only=True)
        if changed:
            raise ConfigError(
                f"{folder / 'checkpoint.pkl'} was made with another config than {folder / 'config.yaml'} "
                f"({', '.join(changed)}); restore config.yaml, or start the run afresh with --overwrite"
            )
    return plugin.position
