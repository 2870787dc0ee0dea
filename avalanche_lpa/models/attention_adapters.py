"""Attention maps from any registered attention family: our layers, timm's ViT/DeiT ``Attention``, ConViT.

An *adapter* tells the package how to read the attention probabilities of one attention module class::

    adapter(module) -> context manager yielding a list

While the context is open, every forward pass of ``module`` appends its probabilities ``[B, heads, T, T]``
(all ``T`` tokens, prefix tokens included) to the list; on exit the module must be exactly as before. Register
one with :func:`register_attention_adapter`; subclasses of a registered class use its adapter unless they
have their own (the most specific class in the MRO wins).

Built in:

* our :class:`~avalanche_lpa.layers.PatchAttention` layers: their own explicit path (``record_attention``),
  so the fast path stays as it is;
* timm's ViT-family ``Attention`` (ViT, DeiT, DeiT-distilled, ViTs with registers): ``fused_attn`` is set to
  ``False`` only while the maps are recorded, and the module's own setting is restored afterwards (also when the
  forward pass raises); the probabilities are read where they enter ``attn_drop``;
* timm ConViT's ``GPSA`` and ``MHSA``: read where they enter ``attn_drop``.

**Prefix tokens.** The locality metric measures distances between patches. A map over ``T`` tokens of a
model whose patch grid has ``N`` patches holds ``T - N`` prefix tokens (CLS, distillation token, registers),
which timm places before the patches. :func:`patch_attention` keeps the patch-to-patch block
``A[:, :, P:, P:]`` and renormalises each row to sum to 1, i.e. the attention a patch pays to other patches,
as a distribution over the grid. The grid comes from the model (``patch_embed.grid_size`` of the nearest
enclosing module that has one, as timm models do) or from the layer (``grid_size`` of our layers).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, Iterator, List, Optional, Tuple, Type

import torch
from timm.models.convit import GPSA as TimmGPSA
from timm.models.convit import MHSA as TimmMHSA
from timm.models.vision_transformer import Attention as TimmAttention
from torch import nn

from ..layers import PatchAttention
from ..layers.position import to_grid

__all__ = [
    "AttentionAdapter",
    "AttentionSite",
    "attention_adapters",
    "attention_layers",
    "attention_sites",
    "collect_attention_maps",
    "patch_attention",
    "record_attention_maps",
    "record_dropout_input",
    "register_attention_adapter",
    "restored_modes",
    "supported_attention_classes",
]

#: ``adapter(module)``: a context manager yielding the list that collects ``[B, heads, T, T]`` maps.
AttentionAdapter = Callable[[nn.Module], ContextManager[List[torch.Tensor]]]

_ADAPTERS: Dict[type, AttentionAdapter] = {}


def register_attention_adapter(module_class: Type[nn.Module], adapter: AttentionAdapter) -> None:
    """Registers how to read the attention probabilities of ``module_class`` (replaces an earlier adapter).

    Args:
        module_class: the attention module class.
        adapter: ``adapter(module)`` returns a context manager yielding a list; while it is open, each forward
            pass of ``module`` appends its probabilities ``[B, heads, T, T]``; on exit the module is restored.
            :func:`record_dropout_input` covers modules whose probabilities pass through a dropout submodule.
    """
    if not (isinstance(module_class, type) and issubclass(module_class, nn.Module)):
        raise TypeError(f"module_class must be an nn.Module subclass, got {module_class!r}")
    if not callable(adapter):
        raise TypeError(f"adapter must be callable (module -> context manager), got {adapter!r}")
    _ADAPTERS[module_class] = adapter


def attention_adapters() -> Dict[type, AttentionAdapter]:
    """The registered adapters, module class -> adapter (a copy)."""
    return dict(_ADAPTERS)


def supported_attention_classes() -> List[str]:
    """The registered attention classes as ``module.QualName`` strings (for error messages)."""
    return [f"{cls.__module__}.{cls.__qualname__}" for cls in _ADAPTERS]


def _adapter_for(module: nn.Module) -> Optional[AttentionAdapter]:
    for cls in type(module).__mro__:  # the most specific registered class wins
        if cls in _ADAPTERS:
            return _ADAPTERS[cls]
    return None


@contextlib.contextmanager
def restored_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Gives every submodule of ``model`` back its train/eval mode on exit (also on error).

    For probes that switch a model to eval mode (the locality metric, the attention maps, input checks) or
    set some parts' modes (finetuning) while the model belongs to a strategy that expects its own modes back.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


@contextlib.contextmanager
def record_dropout_input(dropout: nn.Module) -> Iterator[List[torch.Tensor]]:
    """Collects the tensor entering ``dropout`` on every call: the probabilities, before any dropout."""
    maps: List[torch.Tensor] = []

    def keep(module: nn.Module, inputs: Tuple[torch.Tensor, ...]) -> None:
        maps.append(inputs[0].detach())

    handle = dropout.register_forward_pre_hook(keep)
    try:
        yield maps
    finally:
        handle.remove()


@contextlib.contextmanager
def _record_patch_attention(layer: PatchAttention) -> Iterator[List[torch.Tensor]]:
    # Our layers already record on their explicit path; a hook moves each map into the list.
    maps: List[torch.Tensor] = []

    def take(module: PatchAttention, inputs, output) -> None:
        if module.attention_map is not None:
            maps.append(module.attention_map)
            module.attention_map = None

    previous = layer.record_attention
    layer.record_attention = True
    handle = layer.register_forward_hook(take)
    try:
        yield maps
    finally:
        handle.remove()
        layer.record_attention = previous
        layer.attention_map = None


@contextlib.contextmanager
def _record_timm_attention(attention: nn.Module) -> Iterator[List[torch.Tensor]]:
    # The fused kernel never materialises the probabilities: take the explicit path only while probing.
    fused = attention.fused_attn
    attention.fused_attn = False
    try:
        with record_dropout_input(attention.attn_drop) as maps:
            yield maps
    finally:
        attention.fused_attn = fused


@contextlib.contextmanager
def _record_convit(attention: nn.Module) -> Iterator[List[torch.Tensor]]:
    # GPSA.get_attention and MHSA.forward both send the normalised probabilities through attn_drop.
    with record_dropout_input(attention.attn_drop) as maps:
        yield maps


register_attention_adapter(PatchAttention, _record_patch_attention)
register_attention_adapter(TimmAttention, _record_timm_attention)
register_attention_adapter(TimmGPSA, _record_convit)
register_attention_adapter(TimmMHSA, _record_convit)


@dataclass(frozen=True)
class AttentionSite:
    """One attention module of a model that an adapter can read.

    Attributes:
        name: its name in ``model.named_modules()``.
        module: the module.
        grid_size: the patch grid ``(rows, cols)`` its tokens come from, ``None`` if the model does not say.
    """

    name: str
    module: nn.Module
    grid_size: Optional[Tuple[int, int]]


def _model_grid(modules: Dict[str, nn.Module], name: str) -> Optional[Tuple[int, int]]:
    """``patch_embed.grid_size`` of the nearest module enclosing ``name`` that has one."""
    parts = name.split(".") if name else []
    for depth in range(len(parts) - 1, -1, -1):
        embed = getattr(modules.get(".".join(parts[:depth])), "patch_embed", None)
        grid = getattr(embed, "grid_size", None)
        if grid is not None:
            return to_grid(tuple(grid))
    return None


def attention_sites(model: nn.Module) -> List[AttentionSite]:
    """The attention modules of ``model`` that a registered adapter can read, in module order.

    Works through wrappers (a strategy's ``TrainEvalModel``, DDP), since it walks the modules.
    """
    modules = dict(model.named_modules())
    sites = []
    for name, module in modules.items():
        if _adapter_for(module) is None:
            continue
        grid = to_grid(module.grid_size) if isinstance(module, PatchAttention) else _model_grid(modules, name)
        sites.append(AttentionSite(name, module, grid))
    return sites


def patch_attention(attn: torch.Tensor, grid_size: Optional[Tuple[int, int]]) -> torch.Tensor:
    """The patch-to-patch block of ``[B, heads, T, T]`` probabilities, rows renormalised to sum to 1.

    The first ``T - rows * cols`` tokens are prefix tokens (timm's layout) and are dropped. Without a grid
    the map is returned as it is (all tokens are taken for patches).
    """
    if grid_size is None:
        return attn
    rows, cols = grid_size
    prefix = attn.shape[-1] - rows * cols
    if prefix < 0:
        raise ValueError(
            f"an attention map over {attn.shape[-1]} tokens cannot hold the {rows}x{cols} patch grid of the model; "
            "the layer does not attend over the model's patches (register an adapter that returns patch maps)"
        )
    if prefix == 0:
        return attn
    block = attn[..., prefix:, prefix:]
    # A patch's attention to the other patches, as a distribution over the grid.
    return block / block.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(block.dtype).tiny)


def record_attention_maps(
    model: nn.Module, run: Callable[[], object], sites: Optional[List[AttentionSite]] = None
) -> List[Optional[torch.Tensor]]:
    """Runs ``run()`` with every site recording; returns each site's patch-to-patch map (see :func:`patch_attention`).

    One entry per site, in site order: the detached ``[B, heads, N, N]`` map of its last forward pass in
    ``run()``, ``None`` for a site that did not run. Every module is restored afterwards, also on error.

    Args:
        model: the model (or any module holding attention modules).
        run: performs the forward pass, e.g. ``lambda: model(x)``.
        sites: the sites to record (default: :func:`attention_sites` of ``model``).

    Raises:
        ValueError: ``model`` holds no attention module of a registered family (the message names them).
    """
    sites = attention_sites(model) if sites is None else sites
    if not sites:
        raise ValueError(
            f"{type(model).__name__} has no attention layer of a supported family "
            f"({', '.join(supported_attention_classes())}); build it from avalanche_lpa.layers or timm's ViT/DeiT/"
            "ConViT, or register one with avalanche_lpa.metrics.register_attention_adapter(ModuleClass, adapter)"
        )
    with contextlib.ExitStack() as stack:
        recorded = [stack.enter_context(_adapter_for(site.module)(site.module)) for site in sites]
        run()
    return [patch_attention(maps[-1], site.grid_size) if maps else None for site, maps in zip(sites, recorded)]


def attention_layers(module: nn.Module, kind: Optional[type] = None) -> List[nn.Module]:
    """The attention modules of ``module`` of any registered family (of class ``kind`` if given), in module order.

    ``avalanche_lpa.layers.patch_attention_layers`` stays the finder of our own layers only.
    """
    layers = [site.module for site in attention_sites(module)]
    return layers if kind is None else [layer for layer in layers if isinstance(layer, kind)]


def collect_attention_maps(module: nn.Module, run: Callable[[], object]) -> List[torch.Tensor]:
    """Runs ``run()`` and returns the patch-to-patch maps ``[B, heads, N, N]`` of every attention layer that ran.

    Any registered family (our layers, timm ViT/DeiT/ConViT, user adapters); prefix tokens dropped, rows
    renormalised; every module is restored afterwards.

    Raises:
        ValueError: ``module`` holds no attention layer of a registered family (the message names them).
    """
    return [m for m in record_attention_maps(module, run) if m is not None]
