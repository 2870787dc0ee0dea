"""Configs written by older versions, read in today's keys, so that older run folders still resume and evaluate."""
from __future__ import annotations

import copy
from typing import Any, Mapping

from ..training import strategy_options
from ..training.options import OLD_SCOPE_NAMES
from ..training.sections import DISTILLATION_NAMES, MOVED_OPTIONS

__all__ = ["RUN_FOLDER_DEFAULTS", "run_folder_values", "upgrade_config"]

#: What a run used for the keys added after it started: a run folder's ``config.yaml`` holds every key of the
#: version that wrote it, so a key it lacks ran as that version did, not as today's default says. Data keys.
RUN_FOLDER_DEFAULTS = {"sample_order": "avalanche"}  # one process drew Avalanche's shuffle before the option


def upgrade_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A config written by an older version in today's keys.

    Reads the logger switches of configs written before ``evaluation.loggers`` (``text_log``, ``tensorboard``), the
    flat strategy options written before the plugin sections (``lr_first``, ``lr_warmup_epochs``, ...,
    ``lpa_warmup_start``, ...: :data:`~avalanche_lpa.training.sections.MOVED_OPTIONS`) into their sections, and the
    names ``distillation`` took (``old_samples``, ``all_samples``, ``weighted_lwf``, ``none``) and ``memory_scope``
    took (``per_rank``: ``rank_shard``).
    """
    return _upgrade_strategy(_upgrade_scope(_upgrade_loggers(config)))


def run_folder_values(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A run folder's ``config.yaml`` with the values its run used for the keys it lacks (:data:`RUN_FOLDER_DEFAULTS`).

    Only for a run folder's file: a config the user writes gets today's defaults for what it leaves out.
    """
    data = config.get("data")
    if not isinstance(data, Mapping) or set(RUN_FOLDER_DEFAULTS) <= set(data):
        return config
    return {**config, "data": {**RUN_FOLDER_DEFAULTS, **data}}


def _upgrade_scope(config: Mapping[str, Any]) -> Mapping[str, Any]:
    strategy = config.get("strategy")
    if not isinstance(strategy, Mapping) or strategy.get("memory_scope") not in OLD_SCOPE_NAMES:
        return config
    return {**config, "strategy": {**strategy, "memory_scope": OLD_SCOPE_NAMES[strategy["memory_scope"]]}}


def _upgrade_loggers(config: Mapping[str, Any]) -> Mapping[str, Any]:
    evaluation = config.get("evaluation")
    if not isinstance(evaluation, Mapping) or not {"text_log", "tensorboard"} & set(evaluation):
        return config
    evaluation = dict(evaluation)
    loggers = list(evaluation.get("loggers") or ["text"])
    if evaluation.pop("text_log", True) is False:
        loggers = [name for name in loggers if name != "text"]
    if evaluation.pop("tensorboard", False) is True and "tensorboard" not in loggers:
        loggers.append("tensorboard")
    return {**config, "evaluation": {**evaluation, "loggers": loggers}}


def _upgrade_strategy(config: Mapping[str, Any]) -> Mapping[str, Any]:
    strategy = config.get("strategy")
    named = isinstance(strategy, Mapping) and isinstance(strategy.get("distillation"), str)
    if not isinstance(strategy, Mapping) or not (set(strategy) & set(MOVED_OPTIONS) or named):
        return config
    try:
        own = strategy_options(strategy.get("name", "lpa"))
    except ValueError:  # an unknown name is reported where the config is validated
        return config
    strategy = dict(strategy)
    if named and strategy["distillation"] in DISTILLATION_NAMES and "distillation" in own:
        # distillation: old_samples | all_samples | weighted_lwf | none, the temperature of whichever was on
        sections = copy.deepcopy(DISTILLATION_NAMES[strategy.pop("distillation")])
        if sections["weighted_lwf"] is not False and "temperature" in strategy:
            sections["weighted_lwf"]["temperature"] = strategy.pop("temperature")
        strategy.update(sections)
    moved = {key: strategy.pop(key) for key in list(strategy)
             if key in MOVED_OPTIONS and key not in own and MOVED_OPTIONS[key][0] in own}
    for section in {section for section, _ in MOVED_OPTIONS.values()}:
        parts = {MOVED_OPTIONS[key][1]: value for key, value in moved.items() if MOVED_OPTIONS[key][0] == section}
        switch = strategy.get(section, True if parts else None)
        if switch is True:
            strategy[section] = parts
        elif isinstance(switch, Mapping):
            strategy[section] = {**parts, **switch}
        # false (or absent without parts): the plugin is off, and its arguments meant nothing
    return {**config, "strategy": strategy}
