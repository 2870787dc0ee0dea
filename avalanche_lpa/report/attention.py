"""The per-image attention figure (the paper's teaser, for any run): rows = probe images, columns = evaluations,
each the query patch's attention over the image with its mean attention distance and true-class probability.

Reads ``attention_maps.json``, which the runner writes from
:class:`~avalanche_lpa.metrics.AttentionMapsPluginMetric`; :func:`plot_attention_comparison` puts runs side by side.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from .figures import new_figure, save_figure

__all__ = [
    "AttentionSource", "attention_comparison_figure", "attention_maps_figure", "plot_attention_comparison",
    "plot_attention_maps", "read_attention_maps",
]

PathLike = Union[str, os.PathLike]
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
    figure = new_figure(max(3.6, 1.35 * evaluations + 0.6), 1.45 * images + 1.1)
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
    return save_figure(attention_maps_figure(source, layer=layer), path, dpi)


def attention_comparison_figure(runs: Mapping[str, AttentionSource], *, layer: int = -1):
    """Several runs' attention figures side by side (see :func:`plot_attention_comparison`)."""
    records = {name: read_attention_maps(source) for name, source in runs.items()}
    if not records:
        raise ValueError("no runs to compare")
    images = max(len(r["images"]) for r in records.values())
    widths = [len(r["snapshots"]) for r in records.values()]
    figure = new_figure(max(6.0, 1.35 * sum(widths) + 0.6 * len(widths)), 1.45 * images + 1.3)
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
    return save_figure(attention_comparison_figure(runs, layer=layer), path, dpi)
