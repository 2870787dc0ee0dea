"""Per-image attention maps after every evaluation: the data of the paper's teaser figure, for any model.

:class:`AttentionMapsPluginMetric` draws a few probe images once (class-balanced, default from the first
experience: the classes whose forgetting the figure shows) and, at the end of every evaluation phase of the
chosen stream, keeps for each image

* the attention of one query patch (the centre by default) in every attention layer, averaged over heads,
  as a ``rows x cols`` map over the patch grid (prefix tokens left out, see
  :func:`~avalanche_lpa.models.patch_attention`);
* its mean attention distance (per layer, and averaged over layers and heads, in patches);
* the probability the model gives its true class.

It emits the distance and probability of every image
(``AttentionMaps/eval_phase/<stream>_stream/ImageKK/{Distance,Probability}``) and keeps everything in
:attr:`AttentionMapsPluginMetric.snapshots`; :meth:`AttentionMapsPluginMetric.as_dict` is the small
JSON-ready record (``attention_maps.json`` in a run folder) that ``avalanche_lpa.report`` draws.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, TYPE_CHECKING

import torch
import torch.nn.functional as F
from avalanche.evaluation import PluginMetric
from avalanche.evaluation.metric_results import MetricResult, MetricValue
from avalanche.evaluation.metric_utils import stream_type
from torch import nn

from ..layers import check_grid
from ..layers.position import to_grid
from ..models.attention_adapters import attention_sites, record_attention_maps, restored_modes
from ..timing import timed
from .locality import per_sample_distance
from .probe import draw_probe, full_stream

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["ATTENTION_MAPS_FORMAT", "AttentionMapsPluginMetric", "find_attention_maps_metric"]

#: Version of the :meth:`AttentionMapsPluginMetric.as_dict` layout.
ATTENTION_MAPS_FORMAT = 1


def _display_images(images: torch.Tensor, max_side: int) -> torch.Tensor:
    """Images as uint8 ``[K, C, h, w]`` (each stretched to 0..255, downsampled to at most ``max_side``)."""
    images = images.float()
    if max(images.shape[-2:]) > max_side:
        scale = max_side / max(images.shape[-2:])
        size = [max(1, round(s * scale)) for s in images.shape[-2:]]
        images = F.interpolate(images, size=size, mode="area")
    low = images.amin(dim=(1, 2, 3), keepdim=True)
    high = images.amax(dim=(1, 2, 3), keepdim=True)
    return ((images - low) / (high - low).clamp_min(1e-12) * 255).round().to(torch.uint8)


class AttentionMapsPluginMetric(PluginMetric[Dict[str, Any]]):
    """Query-patch attention maps, distances and true-class probabilities of a few fixed images, per evaluation.

    Args:
        num_images: probe images ``K`` (drawn once, class-balanced, with ``seed``).
        probe_dataset: where to draw them from; ``None``: experience ``experience`` of the evaluated stream.
        experience: which experience of the evaluated stream to draw from (``None``: the whole stream).
        stream: the stream whose evaluations are recorded (others are skipped).
        query: the query patch ``(row, col)``; ``None``: the centre of the grid.
        seed: seed of the draw.
        max_image_side: the images kept for drawing are downsampled to at most this many pixels a side.
    """

    def __init__(
        self,
        num_images: int = 4,
        probe_dataset: Any = None,
        experience: Optional[int] = 0,
        stream: str = "test",
        query: Optional[Tuple[int, int]] = None,
        seed: int = 0,
        max_image_side: int = 64,
    ) -> None:
        super().__init__()
        if num_images < 1:
            raise ValueError(f"num_images must be at least 1, got {num_images}")
        self.num_images = num_images
        self.probe_dataset = probe_dataset
        self.experience = experience
        self.stream = stream
        self.query = None if query is None else (int(query[0]), int(query[1]))
        self.seed = seed
        self.max_image_side = max_image_side
        self.snapshots: List[Dict[str, Any]] = []
        self.images: Optional[torch.Tensor] = None  # uint8 images for drawing, kept in checkpoints (small)
        self.labels: Optional[List[int]] = None
        self.grid: Optional[Tuple[int, int]] = None
        self._probe: Optional[torch.Tensor] = None

    def __getstate__(self) -> Dict[str, Any]:
        # Checkpoints pickle the evaluator: the full-size probe is redrawn (same seed) instead of stored.
        state = self.__dict__.copy()
        state["_probe"] = None
        return state

    def reset(self) -> None:
        """Nothing to reset: the snapshots accumulate over the run (one per evaluation phase)."""

    def result(self) -> Optional[Dict[str, Any]]:
        """The latest snapshot, ``None`` before the first evaluation."""
        return self.snapshots[-1] if self.snapshots else None

    def probe_for(self, experience: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The probe images and labels (drawn on first use from ``experience``'s stream, then cached)."""
        if self._probe is None:
            if self.probe_dataset is not None:
                source = self.probe_dataset
            else:
                stream = full_stream(experience.origin_stream)
                source = stream if self.experience is None else stream[self.experience]
            images, labels = draw_probe(source, self.num_images, self.seed)
            self._probe = images
            if self.images is None:  # first draw of the run (a resumed run redraws the same images)
                self.images = _display_images(images, self.max_image_side)
                self.labels = None if labels is None else labels.tolist()
        return self._probe, None if self.labels is None else torch.tensor(self.labels)

    @torch.no_grad()
    def measure(self, model: nn.Module, images: torch.Tensor, labels: Optional[torch.Tensor], device: Any) -> Dict[str, Any]:
        """One snapshot of ``model`` on ``images`` (eval mode, modes restored afterwards)."""
        sites = attention_sites(model)
        outputs: List[torch.Tensor] = []
        with restored_modes(model):
            model.eval()
            x = images.to(device)
            maps = record_attention_maps(model, lambda: outputs.append(model(x)), sites)
        # One query patch for every layer: the layers must share the patch grid (true of ViT-family models).
        maps_and_grids = [(attn, site.grid_size or to_grid(check_grid(attn.shape[-1])))
                          for attn, site in zip(maps, sites) if attn is not None]
        if not maps_and_grids:
            raise ValueError(f"no attention layer of {type(model).__name__} ran in the forward pass")
        rows, cols = maps_and_grids[0][1]
        if any(grid != (rows, cols) for _, grid in maps_and_grids):
            raise ValueError(
                f"the attention layers work on different patch grids ({sorted({g for _, g in maps_and_grids})}); "
                "per-image maps need one grid for all layers"
            )
        self.grid = (rows, cols)
        row, col = self.query if self.query is not None else (rows // 2, cols // 2)
        if not (0 <= row < rows and 0 <= col < cols):
            raise ValueError(f"query patch {(row, col)} is outside the {rows}x{cols} patch grid")
        query_maps, distances = [], []
        for attn, grid in maps_and_grids:
            query_maps.append(attn[:, :, row * cols + col].mean(dim=1).reshape(-1, rows, cols).float().cpu())
            distances.append(per_sample_distance(attn, grid).mean(dim=1).float().cpu())
        layer_distances = torch.stack(distances, dim=1)  # [K, L]
        probability = None
        if labels is not None:
            probs = outputs[-1].float().softmax(dim=-1).cpu()
            known = labels < probs.shape[1]  # a class beyond the head's outputs has probability 0
            probability = torch.where(known, probs.gather(1, labels.clamp_max(probs.shape[1] - 1)[:, None])[:, 0], 0.0)
        return {
            "maps": torch.stack(query_maps, dim=1),  # [K, L, rows, cols]
            "layer_distances": layer_distances,
            "distance": layer_distances.mean(dim=1),
            "probability": probability,
            "query": (row, col),
        }

    def after_eval(self, strategy: "SupervisedTemplate") -> MetricResult:
        if strategy.experience is None or stream_type(strategy.experience) != self.stream:
            return None
        with timed(strategy, "attention_maps"):
            images, labels = self.probe_for(strategy.experience)
            snapshot = self.measure(strategy.model, images, labels, strategy.device)
        snapshot["train_iterations"] = int(strategy.clock.train_iterations)
        snapshot["trained_experiences"] = int(strategy.clock.train_exp_counter)
        self.snapshots.append(snapshot)
        return self._package_result(snapshot, strategy)

    def _package_result(self, snapshot: Dict[str, Any], strategy: "SupervisedTemplate") -> MetricResult:
        base = f"{self}/eval_phase/{self.stream}_stream"
        x = strategy.clock.train_iterations
        values = []
        for k, distance in enumerate(snapshot["distance"].tolist()):
            values.append(MetricValue(self, f"{base}/Image{k:02d}/Distance", distance, x))
            if snapshot["probability"] is not None:
                values.append(MetricValue(self, f"{base}/Image{k:02d}/Probability", float(snapshot["probability"][k]), x))
        return values

    def as_dict(self) -> Dict[str, Any]:
        """The JSON-ready record: images (uint8), labels, grid, query and one entry per evaluation."""

        def rounded(t: Optional[torch.Tensor]) -> Optional[List[Any]]:
            return None if t is None else torch.round(t.float(), decimals=5).tolist()

        return {
            "format": ATTENTION_MAPS_FORMAT,
            "stream": self.stream,
            "grid": None if self.grid is None else list(self.grid),
            "labels": self.labels,
            "images": None if self.images is None else self.images.tolist(),
            "snapshots": [
                {
                    "train_iterations": s["train_iterations"],
                    "trained_experiences": s["trained_experiences"],
                    "query": list(s["query"]),
                    "maps": rounded(s["maps"]),
                    "layer_distances": rounded(s["layer_distances"]),
                    "distance": rounded(s["distance"]),
                    "probability": rounded(s["probability"]),
                }
                for s in self.snapshots
            ],
        }

    def __str__(self) -> str:
        return "AttentionMaps"


def find_attention_maps_metric(metrics: Sequence[Any]) -> Optional[AttentionMapsPluginMetric]:
    """The first :class:`AttentionMapsPluginMetric` among an evaluator's metrics, ``None`` if there is none."""
    return next((m for m in metrics if isinstance(m, AttentionMapsPluginMetric)), None)
