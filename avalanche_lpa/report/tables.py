"""The comparison table: one row per model / strategy, mean ± std over seeds, beside its joint-training control."""
from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["comparison_table"]


def _mean_std(values: Sequence[Optional[float]]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    if len(values) == 1:  # one seed: no spread to report
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}"


def _first_last_locality(results: Dict[str, Any]) -> tuple:
    locality = results.get("locality") or {}
    mean = locality.get("mean") or []
    return (mean[0], mean[-1]) if mean else (None, None)


def _joint_first_last(results: Dict[str, Any]) -> tuple:
    layers = (results.get("locality_at_milestones") or {}).get("layers") or []
    means = [statistics.fmean(step) for step in layers if step]
    return (means[0], means[-1]) if means else (None, None)


def _differing(cards: Dict[str, Dict[str, Any]]) -> List[str]:
    """The run-card facts (processes, batch, memory, precision, ...) whose values differ between the rows."""
    keys = sorted({key for card in cards.values() for key in card})
    return [key for key in keys if len({repr(card.get(key)) for card in cards.values()}) > 1]


def comparison_table(groups: Dict[str, Dict[str, List[Dict[str, Any]]]]) -> str:
    """Markdown table: one row per model/strategy, mean ± std over seeds; a "run card" column names the facts of
    ``results.json``'s ``run_card`` (processes, batches, memory and its scope, precision, pretrained) where the rows
    differ in them.

    Args:
        groups: ``{label: {"incremental": [results per seed], "joint": [results per seed]}}``.
    """
    cards = {label: runs["incremental"][0].get("run_card") or {} for label, runs in groups.items()}
    differing = _differing(cards)
    header = (
        "| run | seeds | params | avg incr. acc | last acc | forgetting (max) | locality after exp 1 | "
        "locality after last exp | joint acc | joint locality (same iterations) | wall time (s) |"
        + (" run card |\n" if differing else "\n")
        + "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|\n" if differing else "\n")
    )
    rows = []
    for label, runs in groups.items():
        inc = runs["incremental"]
        first_last = [_first_last_locality(r) for r in inc]
        joint_runs = runs.get("joint", [])
        joint = [_joint_first_last(r) for r in joint_runs]
        joint_acc = _mean_std([r["summary"]["last_accuracy"] for r in joint_runs]) if joint_runs else "–"
        joint_cell = (
            f"{_mean_std([j[0] for j in joint])} → {_mean_std([j[1] for j in joint])}" if joint else "–"
        )
        if joint_runs and len(joint_runs) != len(inc):  # controls run for fewer seeds than the incremental runs
            seeds = f" ({len(joint_runs)} seed{'s' if len(joint_runs) > 1 else ''})"
            joint_acc, joint_cell = joint_acc + seeds, joint_cell + seeds
        rows.append(
            f"| {label} | {len(inc)} | {inc[0].get('params', 0) / 1e6:.2f} M "
            f"| {_mean_std([r['summary']['avg_incremental_accuracy'] for r in inc])} "
            f"| {_mean_std([r['summary']['last_accuracy'] for r in inc])} "
            f"| {_mean_std([r['summary']['avg_forgetting_max'] for r in inc])} "
            f"| {_mean_std([f for f, _ in first_last])} | {_mean_std([l for _, l in first_last])} "
            f"| {joint_acc} | {joint_cell} | {_mean_std([r.get('wall_time_s') for r in inc])} |"
            + (f" {', '.join(f'{key} {cards[label].get(key)}' for key in differing)} |" if differing else "")
        )
    return header + "\n".join(rows) + "\n"
