"""The configuration of a run: the typed schema, YAML in and out, validation (once, where a config enters),
older files read in today's keys, the shipped configs and the reference of every key.

    config = load_config("cifar100_quick", ["strategy.lr=1e-3"])   # a RunConfig, validated
    config.data.n_experiences, config.strategy["lr"]                 # typed objects
    print(dump_config(config))                                       # the YAML a run folder keeps

The names load on first use: ``avalanche_lpa.config.shipped`` (the shipped files) imports nothing heavy, so the
command line lists the configs at once.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DEFAULTS", "HARMLESS_KEYS", "LOGGERS", "CheckpointConfig", "ConfigError", "DataConfig", "EvaluationConfig",
    "ModelConfig", "OutputConfig", "RunConfig", "SyntheticData", "apply_overrides", "config_differences",
    "config_reference", "dump_config", "leaves", "load_config", "load_yaml", "read_run_yaml", "read_yaml",
    "select_model", "set_value", "switch_strategy", "updated", "upgrade_config", "validate",
]

_HOMES = {
    "DEFAULTS": "validation", "LOGGERS": "validation", "validate": "validation",
    "HARMLESS_KEYS": "diff", "config_differences": "diff", "leaves": "diff",
    "CheckpointConfig": "schema", "DataConfig": "schema", "EvaluationConfig": "schema", "ModelConfig": "schema",
    "OutputConfig": "schema", "RunConfig": "schema", "SyntheticData": "schema",
    "apply_overrides": "overrides", "select_model": "overrides", "set_value": "overrides", "switch_strategy": "overrides",
    "dump_config": "files", "load_yaml": "files", "read_run_yaml": "files", "read_yaml": "load", "updated": "load",
    "load_config": "load", "upgrade_config": "upgrade", "config_reference": "reference",
}


def __getattr__(name: str) -> Any:
    if name == "ConfigError":
        from ..errors import ConfigError

        return ConfigError
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
