"""Figures of one run or several, as PNG files: the accuracy matrix, accuracy curves and the locality-degradation
figure (mean attention distance per layer over experiences, joint-training controls dashed).

Drawn with matplotlib's Agg canvas (no display, no global pyplot state); matplotlib is imported only when a figure
is drawn. Every file is written atomically (a temporary file moved over the target).
"""
from __future__ import annotations

import io
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from ..files import atomic_write_bytes

__all__ = [
    "JOINT_SUFFIX", "accuracy_matrix_figure", "locality_figure", "plot_accuracy_curves", "plot_accuracy_matrix",
    "plot_locality", "plot_runs",
]

PathLike = Union[str, os.PathLike]


def new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # optional dependency
        raise ImportError("plots need matplotlib: pip install 'avalanche-lpa[plots]'") from error
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # attach the Agg canvas explicitly: works on headless machines, ignores pyplot's backend
    return figure


def save_figure(figure, path: PathLike, dpi: int) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def _integer_steps(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _percent(values: Sequence[Optional[float]]) -> list:
    return [math.nan if v is None else 100.0 * float(v) for v in values]


def accuracy_matrix_figure(
    matrix: Sequence[Sequence[Optional[float]]], *, title: str = "Accuracy matrix", blank_untrained: bool = True
):
    """The accuracy-matrix heat-map as a matplotlib ``Figure`` (see :func:`plot_accuracy_matrix`)."""
    import numpy as np

    values = np.array([_percent(row) for row in matrix], dtype=float)
    steps, exps = values.shape
    if blank_untrained:
        # R[i][j] for j > i is the accuracy on classes not trained yet: 0 % by construction, not a result.
        values[np.triu_indices(steps, k=1, m=exps)] = math.nan
    figure = new_figure(max(4.0, 2.0 + 0.5 * exps), max(3.2, 1.4 + 0.45 * steps))
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_invalid(values), vmin=0.0, vmax=100.0, cmap="viridis")
    figure.colorbar(image, ax=axes, label="accuracy (%)")
    if steps * exps <= 400:  # numbers stay legible up to 20 x 20
        for (i, j), v in np.ndenumerate(values):
            if math.isfinite(v):
                axes.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v < 60 else "black")
    axes.set(xlabel="evaluated on experience", ylabel="after training experience", title=title)
    # 1-based like the step axes of the other figures (metric names count experiences from 000).
    axes.set_xticks(range(exps), [str(j + 1) for j in range(exps)])
    axes.set_yticks(range(steps), [str(i + 1) for i in range(steps)])
    return figure


def plot_accuracy_matrix(
    matrix: Sequence[Sequence[Optional[float]]],
    path: PathLike,
    *,
    title: str = "Accuracy matrix",
    blank_untrained: bool = True,
    dpi: int = 120,
) -> Path:
    """Heat-map of ``R[i][j]`` (fractions, shown in %). Cells not evaluated (``None``/``nan``) stay blank, and
    so do, with ``blank_untrained``, the cells of experiences not trained yet (``j > i``)."""
    return save_figure(accuracy_matrix_figure(matrix, title=title, blank_untrained=blank_untrained), path, dpi)


def _by_seed(values: Sequence[Any], depth: int) -> List[Any]:
    """``values`` as a list over seeds: a single run's series (``depth`` levels of nesting) becomes a list of one."""
    probe: Any = values
    for _ in range(depth):
        probe = next((v for v in probe if v is not None), None) if isinstance(probe, (list, tuple)) else None
        if probe is None:
            break
    return list(values) if isinstance(probe, (list, tuple)) else [values]


def _mean_band(series: Sequence[Sequence[float]]):
    """Mean and standard deviation over seeds (nan where no seed has a value), as numpy arrays."""
    import numpy as np

    width = max(len(s) for s in series)
    table = np.full((len(series), width), np.nan)
    for row, values in enumerate(series):
        table[row, : len(values)] = values
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-nan column (a step no seed reached)
        return np.nanmean(table, axis=0), np.nanstd(table, axis=0)


def _line(axes, steps, series: Sequence[Sequence[float]], **style: Any) -> None:
    """One run's line: its values, or for several seeds their mean with a ± std band."""
    mean, std = _mean_band(series)
    line, = axes.plot(steps[: len(mean)], mean, marker="o", markersize=4, **style)
    if len(series) > 1:
        axes.fill_between(steps[: len(mean)], mean - std, mean + std, color=line.get_color(), alpha=0.15,
                          linewidth=0)


def _base_label(name: str) -> str:
    return name[: -len(JOINT_SUFFIX)] if name.endswith(JOINT_SUFFIX) else name


#: Label suffix of a joint-training control; its lines are dashed, in the colour of its incremental run.
JOINT_SUFFIX = " (joint)"


def _colours(names: Sequence[str]) -> Dict[str, str]:
    bases = list(dict.fromkeys(_base_label(name) for name in names))
    return {base: f"C{i % 10}" for i, base in enumerate(bases)}


def plot_accuracy_curves(
    runs: Mapping[str, Sequence[Any]],
    path: PathLike,
    *,
    title: str = "Accuracy on all classes seen so far",
    dpi: int = 120,
) -> Path:
    """One curve per run: accuracy (fractions, shown in %, axis from 0 to 100) after each step.

    Args:
        runs: name -> the accuracies after each step (``summary.seen_accuracies``), or a list of such series, one
            per seed, drawn as their mean with a ± std band.
        path: the PNG to write.
        title: figure title.
        dpi: resolution.
    """
    figure = new_figure(5.0, 3.5)
    axes = figure.add_subplot()
    colours = _colours(list(runs))
    for name, values in runs.items():
        series = [_percent(seed) for seed in _by_seed(values, 1)]
        steps = list(range(1, max(len(s) for s in series) + 1))
        style = {"linestyle": "--"} if name.endswith(JOINT_SUFFIX) else {}
        _line(axes, steps, series, label=_seeds_label(name, series), color=colours[_base_label(name)], **style)
    axes.set(xlabel="step (experiences trained)", ylabel="accuracy (%)", title=title, ylim=(0.0, 100.0))
    _integer_steps(axes)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return save_figure(figure, path, dpi)


def _seeds_label(name: str, series: Sequence[Any]) -> str:
    return f"{name} ({len(series)} seeds)" if len(series) > 1 else name


def plot_locality(
    runs: Mapping[str, Sequence[Any]],
    path: PathLike,
    *,
    title: str = "Locality over experiences",
    reference: Optional[float] = None,
    dpi: int = 120,
) -> Path:
    """The locality-degradation figure: mean attention distance per layer vs experience, one line per run.

    The y-axis starts at 0, and ``reference`` (e.g. :func:`~avalanche_lpa.metrics.uniform_attention_distance`) is drawn as a dashed grey
    line, so a drift reads against the scale of the grid instead of filling the axis. Layers are numbered from 1
    (as in the attention-maps figure); runs named ``... (joint)`` (joint-training controls) are dashed.

    Args:
        runs: run name -> ``[experience][layer]`` distances (``results["locality"]["layers"]``), or a list of
            those, one per seed, drawn as their mean with a ± std band.
        path: the PNG to write.
        title: figure title.
        reference: the uniform-attention distance of the grid (``None``: no line).
        dpi: resolution.
    """
    return save_figure(locality_figure(runs, title=title, reference=reference), path, dpi)


def locality_figure(
    runs: Mapping[str, Sequence[Any]],
    *,
    title: str = "Locality over experiences",
    reference: Optional[float] = None,
):
    """The locality figure as a matplotlib ``Figure`` (see :func:`plot_locality`)."""
    by_seed = {name: _by_seed(values, 2) for name, values in runs.items()}
    layers = max((len(step) for seeds in by_seed.values() for values in seeds for step in values if step), default=0)
    if layers == 0:
        raise ValueError("no per-layer locality values to plot")
    figure = new_figure(2.6 * layers + 2.6, 3.2)  # + room for the legend on the right
    axes = figure.subplots(1, layers, sharey=True, squeeze=False)[0]
    colours = _colours(list(by_seed))
    top = reference or 0.0
    for name, seeds in by_seed.items():
        style = {"linestyle": "--"} if name.endswith(JOINT_SUFFIX) else {}
        for layer, ax in enumerate(axes):
            series = [[step[layer] if step and layer < len(step) and step[layer] is not None else math.nan
                       for step in values] for values in seeds]
            steps = list(range(1, max(len(s) for s in series) + 1))
            _line(ax, steps, series, color=colours[_base_label(name)],
                  label=_seeds_label(name, seeds) if layer == 0 else None, **style)
            top = max([top] + [v for s in series for v in s if math.isfinite(v)])
    for layer, ax in enumerate(axes):
        if reference is not None:
            ax.axhline(reference, color="grey", linestyle=":", linewidth=1,
                       label=f"uniform attention ({reference:.2f})" if layer == 0 else None)
        ax.set(title=f"layer {layer + 1}", xlabel="after training experience")
        _integer_steps(ax)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0.0, 1.08 * top if top > 0 else 1.0)  # shared y: from 0, so drifts keep their scale
    axes[0].set_ylabel("mean attention distance (patches)")
    # Outside the axes: with the y-axis from 0 the free space inside is where the curves are.
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0.0,
                    fontsize="small")
    figure.suptitle(title)
    return figure


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "run"


def plot_runs(runs: Mapping[str, Mapping[str, Any]], out_dir: PathLike, *, dpi: int = 120) -> Dict[str, Path]:
    """All figures for one or more ``results.json`` contents (run name -> results).

    Writes ``accuracy_curves.png``, ``locality.png`` (when the runs have per-layer locality) and one
    ``accuracy_matrix_<run>.png`` per run into ``out_dir``; returns ``{figure name: path}``.
    """
    out = Path(out_dir)
    paths = {
        "accuracy_curves": plot_accuracy_curves(
            {name: r["summary"]["seen_accuracies"] for name, r in runs.items()}, out / "accuracy_curves.png", dpi=dpi
        )
    }
    locality = {name: r["locality"]["layers"] for name, r in runs.items() if (r.get("locality") or {}).get("layers")}
    if locality:
        references = {r["locality"].get("uniform_distance") for name, r in runs.items() if name in locality}
        reference = references.pop() if len(references) == 1 else None  # one line only for one grid
        paths["locality"] = plot_locality(locality, out / "locality.png", reference=reference, dpi=dpi)
    for name, r in runs.items():
        key = f"accuracy_matrix_{_slug(name)}"
        paths[key] = plot_accuracy_matrix(
            r["accuracy_matrix"], out / f"{key}.png", title=f"Accuracy matrix: {name}", dpi=dpi
        )
    return paths
