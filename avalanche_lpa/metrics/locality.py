"""Locality metric: mean attention distance of every patch-attention layer, per head.

``D_h = (1/N) sum_i sum_j A_h(i, j) * ||pos(j) - pos(i)||`` in patch units, averaged over images (design
note, "How locality is measured"). Three levels, in the style of Avalanche's ``mac.py``:

* :func:`mean_attention_distance` on one attention tensor;
* :class:`MeanAttentionDistance`, a standalone ``Metric`` that accumulates it over batches and layers;
* :class:`LocalityPluginMetric` (via :func:`locality_metrics`), which measures a fixed probe set at the end
  of every evaluation phase and emits ``Locality_Stream/eval_phase/<stream>_stream[/LayerXX[/HeadYY]]``.

Attention layers are found through the adapter registry (:mod:`avalanche_lpa.models.attention_adapters`): our
:class:`~avalanche_lpa.layers.PatchAttention` layers, timm's ViT/DeiT ``Attention`` and ConViT's ``GPSA`` / ``MHSA``,
and any family added with :func:`~avalanche_lpa.models.register_attention_adapter`. They are found as submodules,
never by the model class, so a model works also when a strategy wraps it (iCaRL's ``TrainEvalModel``). Prefix
tokens (CLS, distillation token, registers) are left out: the distance is measured on the patch-to-patch block
of each map with its rows renormalised (:func:`~avalanche_lpa.models.patch_attention`).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, TYPE_CHECKING

import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation import Metric, PluginMetric
from avalanche.evaluation.metric_results import MetricResult, MetricValue
from avalanche.evaluation.metric_utils import default_metric_name_template, generic_get_metric_name, stream_type
from torch import nn

from ..layers import GridSize, check_grid, relative_distances
from ..layers.position import to_grid
from ..models.attention_adapters import (
    attention_layers,
    attention_sites,
    collect_attention_maps,
    record_attention_maps,
    restored_modes,
)
from ..timing import timed
from .probe import draw_probe, full_stream

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "LocalityAtIterations",
    "LocalityPluginMetric",
    "MeanAttentionDistance",
    "attention_layers",
    "collect_attention_maps",
    "locality_metrics",
    "mean_attention_distance",
    "measure_locality",
    "uniform_attention_distance",
]


def per_sample_distance(attn: torch.Tensor, grid_size: Optional[GridSize]) -> torch.Tensor:
    """Per-image, per-head mean attention distances ``[B, H]`` of ``[B, H, N, N]`` (or ``[H, N, N]``) maps."""
    if attn.dim() == 3:
        attn = attn.unsqueeze(0)
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"expected attention probabilities [B, heads, N, N] or [heads, N, N], got {list(attn.shape)}")
    tokens = attn.shape[-1]
    rows, cols = to_grid(grid_size) if grid_size is not None else to_grid(check_grid(tokens))
    if rows * cols != tokens:
        raise ValueError(f"grid {rows}x{cols} has {rows * cols} patches but the attention map has {tokens} tokens")
    dist = relative_distances((rows, cols), device=attn.device).to(attn.dtype)
    # Sum over keys j weighs each distance by its probability; the mean over queries i is the 1/N.
    return (attn * dist).sum(dim=-1).mean(dim=-1)


def mean_attention_distance(attn: torch.Tensor, grid_size: Optional[GridSize] = None) -> torch.Tensor:
    """Mean attention distance per head, in patch units.

    Args:
        attn: attention probabilities ``[B, heads, N, N]`` or ``[heads, N, N]`` over patch tokens (rows sum to 1).
        grid_size: the patch grid ``G`` or ``(rows, cols)``; inferred for a square grid when omitted.

    Returns:
        ``[heads]``: ``D_h`` averaged over the batch.

    Raises:
        TypeError: ``attn`` is a model, not its maps (:func:`measure_locality` measures a model on images).
    """
    if isinstance(attn, nn.Module):
        raise TypeError("mean_attention_distance takes attention maps [B, heads, N, N]; for a model use "
                        "measure_locality(model, images, device) or model.get_attention_maps(images)")
    return per_sample_distance(attn, grid_size).mean(dim=0)


class MeanAttentionDistance(Metric[List[torch.Tensor]]):
    """Standalone metric: mean attention distance per layer and head, averaged over all images seen.

    ``result()`` is a list with one ``[heads]`` tensor per layer (``None`` before any update).
    """

    def __init__(self) -> None:
        self._sums: List[torch.Tensor] = []
        self._count = 0

    @torch.no_grad()
    def update(self, attention_maps: Sequence[torch.Tensor], grid_sizes: Sequence[Optional[GridSize]]) -> None:
        """Adds one batch: one ``[B, heads, N, N]`` map and one grid size per layer, same ``B`` for all."""
        if len(attention_maps) != len(grid_sizes):
            raise ValueError(f"got {len(attention_maps)} attention maps but {len(grid_sizes)} grid sizes")
        per_layer = [per_sample_distance(a, g) for a, g in zip(attention_maps, grid_sizes)]
        if not per_layer:
            raise ValueError("no attention maps to measure")
        batch = per_layer[0].shape[0]
        if any(d.shape[0] != batch for d in per_layer):
            raise ValueError("all layers must be measured on the same batch of images")
        if self._sums and len(self._sums) != len(per_layer):
            raise ValueError(f"expected {len(self._sums)} layers as in earlier updates, got {len(per_layer)}")
        # Float64 sums on the CPU: hundreds of images x several heads add up without drift.
        sums = [d.sum(dim=0).double().cpu() for d in per_layer]
        self._sums = sums if not self._sums else [a + b for a, b in zip(self._sums, sums)]
        self._count += batch

    @torch.no_grad()
    def update_from_model(self, model: nn.Module, inputs: torch.Tensor) -> None:
        """Runs ``model(inputs)`` with attention recording on and adds the maps of all its attention layers.

        Layers of any registered family count (see the module docstring); prefix tokens are left out.

        The caller chooses train/eval mode and device, as with Avalanche's ``MAC.update``.
        """
        sites = attention_sites(model)
        maps = record_attention_maps(model, lambda: model(inputs), sites)
        idle = [site.name for site, attn in zip(sites, maps) if attn is None]
        if idle:
            raise ValueError(
                f"{len(idle)} of the {len(sites)} attention layers did not run in the forward pass ({', '.join(idle)}); "
                "the locality metric needs every attention layer of the model to be used"
            )
        self.update(maps, [site.grid_size for site in sites])

    def result(self) -> Optional[List[torch.Tensor]]:
        """Per layer, the ``[heads]`` mean attention distances; ``None`` before any update."""
        if self._count == 0:
            return None
        return [(s / self._count).float() for s in self._sums]

    def reset(self) -> None:
        self._sums = []
        self._count = 0


@torch.no_grad()
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


def measure_locality(
    model: nn.Module,
    images: torch.Tensor,
    device: Any,
    batch_size: int = 64,
    metric: Optional[MeanAttentionDistance] = None,
) -> MeanAttentionDistance:
    """Mean attention distance of ``model`` on ``images``, in eval mode, ``batch_size`` images at a time.

    Every submodule's train/eval mode is restored afterwards (also on error). Adds to ``metric`` if given.

    Returns:
        The metric; ``.result()`` holds one ``[heads]`` tensor per attention layer.
    """
    metric = metric if metric is not None else MeanAttentionDistance()
    with restored_modes(model):
        model.eval()
        for chunk in images.split(batch_size):
            metric.update_from_model(model, chunk.to(device))
    return metric


class LocalityPluginMetric(PluginMetric[List[torch.Tensor]]):
    """Mean attention distance on a fixed probe set, measured once at the end of each evaluation phase.

    The probe is ``probe_size`` images drawn once, class-balanced, with ``seed``: from ``probe_dataset`` if
    given (a dataset, an experience or a stream, e.g. ``benchmark.test_stream``), else from the whole stream
    being evaluated, the first time that stream is evaluated (one probe per stream name; a legacy slice such
    as ``test_stream[:2]`` is traced back to its whole stream). The forward pass runs under ``no_grad`` in
    eval mode on the strategy's device; the model's train/eval modes are restored afterwards. Nothing
    happens during training iterations (a periodic eval inside ``train`` is an eval phase and is measured).

    Emits (``<s>`` = stream name): ``Locality_Stream/eval_phase/<s>_stream`` (mean over layers and heads),
    ``.../LayerXX`` (mean over the heads of a layer) and ``.../LayerXX/HeadYY``.

    Args:
        probe_size: number of probe images ``K``.
        probe_dataset: where to draw the probe from; ``None`` draws from the evaluated stream.
        seed: seed of the probe draw.
        batch_size: images per forward pass; ``None`` uses the strategy's ``eval_mb_size``.
        per_layer: emit the per-layer values.
        per_head: emit the per-head values.
    """

    def __init__(
        self,
        probe_size: int = 256,
        probe_dataset: Any = None,
        seed: int = 0,
        batch_size: Optional[int] = None,
        per_layer: bool = True,
        per_head: bool = True,
    ) -> None:
        super().__init__()
        if probe_size <= 0:
            raise ValueError(f"probe_size must be positive, got {probe_size}")
        self.probe_size = probe_size
        self.probe_dataset = probe_dataset
        self.seed = seed
        self.batch_size = batch_size
        self.per_layer = per_layer
        self.per_head = per_head
        self._metric = MeanAttentionDistance()
        self._probes: Dict[Optional[str], torch.Tensor] = {}

    def reset(self) -> None:
        self._metric.reset()

    def result(self) -> Optional[List[torch.Tensor]]:
        return self._metric.result()

    def __getstate__(self) -> Dict[str, Any]:
        # Checkpoints pickle the evaluator: leave the probe images out (up to ~150 MB at 224 px); the
        # fixed seed redraws exactly the same images on the next evaluation.
        state = self.__dict__.copy()
        state["_probes"] = {}
        return state

    @property
    def probes(self) -> Dict[Optional[str], torch.Tensor]:
        """The probes drawn so far: stream name (``None`` for ``probe_dataset``) -> images ``[K, C, H, W]``."""
        return dict(self._probes)

    def probe_for(self, experience: Any) -> torch.Tensor:
        """The probe images for the stream of ``experience`` (drawn on first use, then cached)."""
        key = None if self.probe_dataset is not None else stream_type(experience)
        if key not in self._probes:
            source = self.probe_dataset if self.probe_dataset is not None else full_stream(experience.origin_stream)
            self._probes[key] = draw_probe(source, self.probe_size, self.seed)[0]
        return self._probes[key]

    @torch.no_grad()
    def measure(self, model: nn.Module, images: torch.Tensor, device: Any, batch_size: int) -> None:
        """Measures ``images`` (see :func:`measure_locality`) into this metric."""
        measure_locality(model, images, device, batch_size, self._metric)

    def after_eval(self, strategy: "SupervisedTemplate") -> MetricResult:
        if strategy.experience is None:
            return None
        self.reset()
        batch_size = self.batch_size or getattr(strategy, "eval_mb_size", None) or 64
        with timed(strategy, "locality_probe"):
            self.measure(strategy.model, self.probe_for(strategy.experience), strategy.device, batch_size)
        return self._package_result(strategy)

    def _package_result(self, strategy: "SupervisedTemplate") -> MetricResult:
        per_layer = self.result()
        if per_layer is None:
            return None
        base = generic_get_metric_name(
            default_metric_name_template,
            {"metric_name": str(self), "phase_name": "eval", "stream_name": stream_type(strategy.experience)},
        )
        x = strategy.clock.train_iterations
        # Python floats: loggers print them and TensorBoard plots them as scalars (a tensor would be a histogram).
        values = [MetricValue(self, base, float(torch.cat(per_layer).mean()), x)]
        for layer, heads in enumerate(per_layer):
            if self.per_layer:
                values.append(MetricValue(self, f"{base}/Layer{layer:02d}", float(heads.mean()), x))
            if self.per_head:
                values += [
                    MetricValue(self, f"{base}/Layer{layer:02d}/Head{head:02d}", float(d), x)
                    for head, d in enumerate(heads)
                ]
        return values

    def __str__(self) -> str:
        return "Locality_Stream"


def locality_metrics(
    *,
    probe_size: int = 256,
    probe_dataset: Any = None,
    seed: int = 0,
    batch_size: Optional[int] = None,
    per_layer: bool = True,
    per_head: bool = True,
) -> List[PluginMetric]:
    """The locality plugin metrics for an ``EvaluationPlugin``; no arguments gives the design-note setup.

    See :class:`LocalityPluginMetric` for the arguments and the emitted names.
    """
    return [
        LocalityPluginMetric(
            probe_size=probe_size,
            probe_dataset=probe_dataset,
            seed=seed,
            batch_size=batch_size,
            per_layer=per_layer,
            per_head=per_head,
        )
    ]


class LocalityAtIterations(SupervisedPlugin):
    """Measures the mean attention distance per layer on a fixed probe at given training iterations.

    The joint-training control of a comparison uses it: locality at the iterations where the incremental run
    finished each experience, and training stops after the last one.

    Args:
        probe: images ``[K, C, H, W]``.
        milestones: training iterations (counted from the start of the run) to measure at.
        batch_size: probe images per forward pass.
    """

    def __init__(self, probe: torch.Tensor, milestones: Sequence[int], batch_size: int = 64) -> None:
        super().__init__()
        if not milestones:
            raise ValueError("need at least one milestone (a training iteration to measure at)")
        self.probe = probe
        self.milestones = sorted(set(int(m) for m in milestones))
        self.batch_size = batch_size
        self.layers: Dict[int, List[float]] = {}  # milestone -> mean distance of every layer
        self.iterations = 0

    def after_training_iteration(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # Counted here: Avalanche's clock is itself a plugin and runs after this one, so its count lags by one.
        self.iterations += 1
        step = self.iterations
        if step in self.milestones:
            metric = measure_locality(strategy.model, self.probe, strategy.device, self.batch_size)
            self.layers[step] = [heads.mean().item() for heads in metric.result()]
        if step >= self.milestones[-1]:
            strategy.stop_training()

