"""Results files and figures of a run.

* :func:`collect_results` assembles the ``results.json`` content (config, versions, seed, device, accuracy
  matrix, CIL summary, locality per experience/layer/head, wall time) from a strategy's metric history;
  :func:`write_results` writes it atomically and :func:`read_results` reads it back.
* ``plot_*`` draw PNG figures with matplotlib's Agg canvas (no display, no global pyplot state). matplotlib
  is imported only when a plot is drawn: it is the optional ``plots`` extra.
* :func:`plot_attention_maps` draws the per-image attention figure of a run folder (``attention_maps.json``,
  written by the runner from :class:`~avalanche_lpa.metrics.AttentionMapsPluginMetric`) and
  :func:`plot_attention_comparison` puts several runs side by side.

Every file is written to a temporary file in the target folder and moved over the target with
``os.replace``, so a crash or a serialization error never leaves a half-written file behind.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import io
import json
import math
import os
import platform
import re
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch

from .. import __version__
from ..files import atomic_write_bytes
from ..layers import relative_distances
from ..metrics import attention_sites, locality_history, summarize
from ..metrics.history import metric_history, values_by_point
from .config import ConfigError
from .folder import read_run_json

__all__ = [
    "RESULTS_SCHEMA",
    "accuracy_matrix_figure",
    "attention_comparison_figure",
    "attention_maps_figure",
    "collect_results",
    "package_versions",
    "plot_accuracy_curves",
    "plot_accuracy_matrix",
    "plot_attention_comparison",
    "plot_attention_maps",
    "plot_locality",
    "locality_figure",
    "plot_runs",
    "read_attention_maps",
    "read_results",
    "to_jsonable",
    "uniform_attention_distance",
    "write_results",
]

PathLike = Union[str, os.PathLike]

#: Version of the ``results.json`` layout; bump it when keys change meaning.
RESULTS_SCHEMA = 1


# -- results.json -------------------------------------------------------------------------------------------
def package_versions() -> Dict[str, Optional[str]]:
    """Versions of Python and of the packages that decide the numbers (``None`` if not installed)."""
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "avalanche-lib", "timm", "numpy"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    # The running source tree, which need not be the installed distribution.
    versions["avalanche_lpa"] = __version__
    return versions


def to_jsonable(value: Any) -> Any:
    """Converts tensors, numpy values, paths, devices and dataclasses to JSON types; ``nan``/``inf`` to ``None``.

    Raises:
        TypeError: for anything else that JSON cannot hold.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # strict JSON has no NaN
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, (os.PathLike, torch.device)):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "tolist") and type(value).__module__.startswith("numpy"):
        return to_jsonable(value.tolist())
    raise TypeError(f"cannot write a {type(value).__name__} to results.json: {value!r}")


def collect_results(
    source: Any,
    *,
    config: Optional[Mapping[str, Any]] = None,
    seed: Optional[int] = None,
    device: Any = None,
    wall_time_s: Optional[float] = None,
    stream: str = "test",
    exp_sizes: Optional[Sequence[int]] = None,
    points: Optional[Sequence[int]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Assembles the ``results.json`` content of a run.

    Args:
        source: the strategy, its ``EvaluationPlugin`` or ``get_all_metrics()``.
        config: the run's configuration.
        seed: the run's seed.
        device: the device it ran on.
        wall_time_s: wall-clock duration in seconds.
        stream: the evaluated stream's name.
        exp_sizes: test samples per experience (weights of the seen-classes accuracy).
        points: the eval points to keep, one per experience (see ``metrics.accuracy_matrix``).
        extra: more top-level entries.
    """
    history = metric_history(source)
    summary = summarize(history, stream=stream, exp_sizes=exp_sizes, points=points).as_dict()
    has_locality = bool(values_by_point(history, "Locality_Stream", stream))
    results: Dict[str, Any] = {
        "schema": RESULTS_SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": dict(config or {}),
        "seed": seed,
        "device": None if device is None else str(device),
        "versions": package_versions(),
        "wall_time_s": wall_time_s,
        "accuracy_matrix": summary.pop("accuracy_matrix"),
        "summary": summary,
        "locality": locality_history(history, stream, points) if has_locality else None,
    }
    results.update(extra or {})
    return results


def write_results(path: PathLike, results: Mapping[str, Any]) -> Path:
    """Writes ``results`` as JSON, atomically: on any error the previous file stays as it was."""
    # Serialize completely before touching the disk, so a bad value cannot truncate anything.
    text = json.dumps(to_jsonable(results), indent=2, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def read_results(path: PathLike) -> Dict[str, Any]:
    """Reads a ``results.json`` written by :func:`write_results`.

    Raises:
        ConfigError: the file does not parse or is not a results mapping (one line).
    """
    results = read_run_json(path)
    if not isinstance(results, dict):
        raise ConfigError(f"{path} is damaged (not a results mapping); run the run again with --overwrite")
    return results


# -- figures ------------------------------------------------------------------------------------------------
def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:  # optional dependency
        raise ImportError("plots need matplotlib: pip install 'avalanche-lpa[plots]'") from error
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # attach the Agg canvas explicitly: works on headless machines, ignores pyplot's backend
    return figure


def _save(figure, path: PathLike, dpi: int) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def _integer_steps(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _percent(values: Sequence[Optional[float]]) -> list:
    return [math.nan if v is None else 100.0 * float(v) for v in values]


def uniform_attention_distance(source: Any) -> Optional[float]:
    """Mean attention distance (patches) of attention spread evenly over the patch grid: the reference value.

    Args:
        source: a model with attention layers of any registered family (the grid of its first one is used) or a
            grid size ``G`` / ``(rows, cols)``. ``None`` if a model has no such layer or does not give its grid.
    """
    if isinstance(source, torch.nn.Module):
        sites = attention_sites(source)
        if not sites or sites[0].grid_size is None:
            return None
        source = sites[0].grid_size
    return float(relative_distances(source).mean())


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
    figure = _figure(max(4.0, 2.0 + 0.5 * exps), max(3.2, 1.4 + 0.45 * steps))
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
    return _save(accuracy_matrix_figure(matrix, title=title, blank_untrained=blank_untrained), path, dpi)


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
    figure = _figure(5.0, 3.5)
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
    return _save(figure, path, dpi)


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

    The y-axis starts at 0, and ``reference`` (e.g. :func:`uniform_attention_distance`) is drawn as a dashed grey
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
    return _save(locality_figure(runs, title=title, reference=reference), path, dpi)


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
    figure = _figure(2.6 * layers + 2.6, 3.2)  # + room for the legend on the right
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


# -- per-image attention maps (the teaser figure) -------------------------------------------------------------
AttentionSource = Union[PathLike, Mapping[str, Any]]


def read_attention_maps(source: AttentionSource) -> Dict[str, Any]:
    """The attention-maps record of a run: its folder, an ``attention_maps.json`` path or the record itself."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "attention_maps.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; runs write it when evaluation.attention_maps > 0")
    return json.loads(path.read_text(encoding="utf-8"))


def _draw_attention_grid(container: Any, data: Mapping[str, Any], layer: int) -> None:
    """Rows = images, columns = evaluations: the query patch's attention over the image, titled d and p.

    ``container`` is a matplotlib ``Figure`` or ``SubFigure`` (one panel of the comparison).
    """
    import numpy as np
    from matplotlib.patches import Rectangle

    snapshots, images = data["snapshots"], np.asarray(data["images"], dtype=float) / 255.0
    if not snapshots or images.size == 0:
        raise ValueError("the attention-maps record holds no evaluation to draw")
    rows, cols = data["grid"]
    axes = container.subplots(len(images), len(snapshots), squeeze=False)
    for k, image in enumerate(images):
        maps = [np.asarray(s["maps"][k][layer], dtype=float) for s in snapshots]
        top = max(float(m.max()) for m in maps) or 1.0  # one colour scale per image: spreading shows as fading
        for e, (snapshot, attention) in enumerate(zip(snapshots, maps)):
            ax = axes[k][e]
            extent = (0, cols, rows, 0)  # image and map both in patch units
            if image.shape[0] == 1:
                ax.imshow(image[0], cmap="gray", extent=extent, vmin=0.0, vmax=1.0)
            else:
                ax.imshow(image.transpose(1, 2, 0), extent=extent)
            ax.imshow(attention, cmap="inferno", alpha=0.6, extent=extent, vmin=0.0, vmax=top, interpolation="nearest")
            q_row, q_col = snapshot["query"]
            ax.add_patch(Rectangle((q_col, q_row), 1, 1, fill=False, edgecolor="cyan", linewidth=1.0))
            distance = snapshot["layer_distances"][k][layer]
            probability = snapshot["probability"][k] if snapshot.get("probability") is not None else None
            label = f"d={distance:.2f}" + (f"  p={probability:.2f}" if probability is not None else "")
            header = f"after exp {snapshot['trained_experiences']}\n" if k == 0 else ""
            ax.set_title(header + label, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if e == 0 and data.get("labels") is not None:
                ax.set_ylabel(f"class {data['labels'][k]}", fontsize=7)


def _layer_note(data: Mapping[str, Any], layer: int) -> str:
    layers = len(data["snapshots"][0]["maps"][0])
    return f"attention layer {layer % layers + 1} of {layers}"


def attention_maps_figure(source: AttentionSource, *, layer: int = -1, title: Optional[str] = None):
    """The per-image attention figure of one run as a matplotlib ``Figure`` (see :func:`plot_attention_maps`)."""
    data = read_attention_maps(source)
    images, evaluations = len(data["images"]), len(data["snapshots"])
    figure = _figure(max(3.6, 1.35 * evaluations + 0.6), 1.45 * images + 1.1)
    _draw_attention_grid(figure, data, layer)
    figure.suptitle(title or (
        f"Attention of the query patch (cyan),\n{_layer_note(data, layer)}, mean over heads;\n"
        "d: mean attention distance (patches), p: true-class probability"), fontsize=8)
    return figure


def plot_attention_maps(
    source: AttentionSource, path: Optional[PathLike] = None, *, layer: int = -1, dpi: int = 120
) -> Path:
    """The paper's teaser for any run: rows = probe images, columns = evaluations (one per experience).

    Each cell overlays the attention of the query patch (averaged over heads, in attention layer ``layer``) on
    the image, titled with that layer's mean attention distance ``d`` for the image and the true-class
    probability ``p``.

    Args:
        source: a run folder, its ``attention_maps.json`` or the record itself.
        path: the PNG to write (default: ``attention_maps.png`` next to the record of a folder).
        layer: which attention layer to show (default: the last).
        dpi: resolution.
    """
    if path is None:
        if isinstance(source, Mapping):
            raise ValueError("pass path= when drawing a record that is not read from a run folder")
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        path = folder / "attention_maps.png"
    return _save(attention_maps_figure(source, layer=layer), path, dpi)


def attention_comparison_figure(runs: Mapping[str, AttentionSource], *, layer: int = -1):
    """Several runs' attention figures side by side (see :func:`plot_attention_comparison`)."""
    records = {name: read_attention_maps(source) for name, source in runs.items()}
    if not records:
        raise ValueError("no runs to compare")
    images = max(len(r["images"]) for r in records.values())
    widths = [len(r["snapshots"]) for r in records.values()]
    figure = _figure(max(6.0, 1.35 * sum(widths) + 0.6 * len(widths)), 1.45 * images + 1.3)
    panels = figure.subfigures(1, len(records), width_ratios=widths, squeeze=False)[0]
    for panel, (name, data) in zip(panels, records.items()):
        _draw_attention_grid(panel, data, layer)
        panel.suptitle(f"{name} ({_layer_note(data, layer)})", fontsize=8)
    figure.suptitle("Attention of the query patch (cyan), mean over heads; d: mean attention distance (patches), "
                    "p: true-class probability", fontsize=8)
    return figure


def plot_attention_comparison(
    runs: Mapping[str, AttentionSource], path: PathLike, *, layer: int = -1, dpi: int = 120
) -> Path:
    """Runs side by side (run name -> folder or record), each as in :func:`plot_attention_maps`."""
    return _save(attention_comparison_figure(runs, layer=layer), path, dpi)
