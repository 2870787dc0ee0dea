"""Relative-position helpers shared by the LPA, GPSA and MHSA attention layers.

All three layers work on a ``G x G`` grid of patch tokens (no CLS token). The helpers here describe the
geometry of that grid once, so that the attention kernels, the local initialisation and the locality metric
agree on what "offset" and "distance" mean.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch

#: A patch grid: its side ``G`` for a square grid, or ``(rows, cols)``.
GridSize = Union[int, Tuple[int, int]]

__all__ = [
    "GridSize",
    "to_grid",
    "grid_offsets",
    "relative_position_features",
    "centred_grid_coordinates",
    "relative_distances",
    "local_position_weights",
    "check_grid",
]


def to_grid(grid_size: GridSize) -> Tuple[int, int]:
    """Normalises a grid size to ``(rows, cols)``."""
    if isinstance(grid_size, int):
        return grid_size, grid_size
    rows, cols = grid_size
    return int(rows), int(cols)


def check_grid(num_tokens: int) -> int:
    """Returns the side ``G`` of a square grid of ``num_tokens`` patches, or raises ``ValueError``."""
    side = int(round(math.sqrt(num_tokens)))
    if side * side != num_tokens:
        raise ValueError(
            f"cannot infer a square patch grid from {num_tokens} tokens; pass grid_size=(rows, cols) explicitly"
        )
    return side


def grid_offsets(grid_size: GridSize, device=None) -> torch.Tensor:
    """Offsets ``pos(j) - pos(i)`` in patch units between all token pairs.

    Args:
        grid_size: the patch grid, ``G`` or ``(rows, cols)``; tokens are numbered row by row.
        device: where to build the tensor.

    Returns:
        Float tensor ``[N, N, 2]`` holding ``(dx, dy)`` with ``N = rows * cols``.
    """
    rows, cols = to_grid(grid_size)
    ys, xs = torch.meshgrid(
        torch.arange(rows, device=device, dtype=torch.float32),
        torch.arange(cols, device=device, dtype=torch.float32),
        indexing="ij",
    )
    pos = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # [N, 2] as (x, y)
    return pos[None, :, :] - pos[:, None, :]


def centred_grid_coordinates(grid_size: GridSize, device=None) -> torch.Tensor:
    """Integer patch coordinates ``(x, y)`` of every token, centred on the grid, shape ``[N, 2]`` (float32).

    Offsets between tokens are those of :func:`grid_offsets`; centring keeps the coordinates (and products of
    them) small, so that position features built from them lose nothing to rounding.
    """
    rows, cols = to_grid(grid_size)
    ys, xs = torch.meshgrid(
        torch.arange(rows, device=device, dtype=torch.float32) - (rows - 1) // 2,
        torch.arange(cols, device=device, dtype=torch.float32) - (cols - 1) // 2,
        indexing="ij",
    )
    return torch.stack([xs.flatten(), ys.flatten()], dim=-1)


def relative_position_features(grid_size: GridSize, device=None) -> torch.Tensor:
    """Relative-position features ``r_ij = (dx, dy, dx^2 + dy^2)`` of every pair, shape ``[N, N, 3]``."""
    offsets = grid_offsets(grid_size, device=device)
    return torch.cat([offsets, offsets.pow(2).sum(-1, keepdim=True)], dim=-1)


def relative_distances(grid_size: GridSize, device=None) -> torch.Tensor:
    """Euclidean distance ``||pos(j) - pos(i)||`` in patch units of every pair, shape ``[N, N]``."""
    return grid_offsets(grid_size, device=device).norm(dim=-1)


def local_position_weights(
    num_heads: int, locality_strength: float = 1.0, random_std: float = 0.02
) -> Tuple[torch.Tensor, int]:
    """ConViT-style local initialisation of the per-head position weights ``a_h``.

    The first ``s * s`` heads (``s = floor(sqrt(num_heads))``) get weights that make
    ``a_h . r_ij = -alpha * ||delta - Delta_h||^2 + const``: a Gaussian focus on the offset ``Delta_h`` of an
    ``s x s`` grid of offsets centred on zero (a 3x3 neighbourhood for 9..15 heads). The remaining heads keep
    small random weights, so they start close to uniform.

    Args:
        num_heads: number of attention heads.
        locality_strength: ``alpha``, the sharpness of the focus.
        random_std: standard deviation of the weights of heads that are not locally initialised.

    Returns:
        ``(weights [num_heads, 3], number of locally initialised heads)``.
    """
    side = int(math.isqrt(num_heads))
    weights = torch.randn(num_heads, 3) * random_std
    # Offsets -1, 0, 1 for side 3; 0, 1 for side 2: centred on zero, rounding towards the positive side.
    centre = (side - 1) // 2
    for head in range(side * side):
        dy, dx = divmod(head, side)
        delta = torch.tensor([dx - centre, dy - centre], dtype=torch.float32)
        # -alpha * ||d - D||^2 = -alpha*||d||^2 + 2*alpha*D.d - alpha*||D||^2 (the constant drops out of softmax)
        weights[head, :2] = 2.0 * locality_strength * delta
        weights[head, 2] = -locality_strength
    return weights, side * side
