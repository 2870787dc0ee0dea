"""Attention layers: fused vs explicit paths, local init, maps, geometry and argument checks."""
import copy

import pytest
import torch

from avalanche_lpa.layers import (
    ATTENTION_LAYERS,
    DENORMAL_GUARD,
    GPSAttention,
    LPAttention,
    MHSAttention,
    collect_patch_attention_maps,
    local_position_weights,
    relative_distances,
    relative_position_features,
)

DIM, HEADS, GRID = 36, 9, 4


def _randomise(layer: torch.nn.Module) -> torch.nn.Module:
    """Moves the layer away from its init so the content term matters."""
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def _assert_close_scaled(a: torch.Tensor, b: torch.Tensor, name: str = "") -> None:
    scale = b.abs().max().clamp_min(1.0)
    assert (a - b).abs().max() <= 1e-5 * scale, (name, (a - b).abs().max().item(), scale.item())


@pytest.mark.parametrize("kernel", ["fused", "matmul", "sdpa"])
def test_lpa_fused_matches_explicit_outputs_and_gradients(kernel):
    layer = _randomise(LPAttention(DIM, HEADS, GRID, kernel=kernel))
    x = torch.randn(3, GRID * GRID, DIM, requires_grad=True)
    target = torch.randn(3, GRID * GRID, DIM)

    fused = layer(x)
    ((fused - target) ** 2).sum().backward()
    grads_fused = {n: p.grad.clone() for n, p in layer.named_parameters()}
    grad_x_fused = x.grad.clone()
    layer.zero_grad()
    x.grad = None

    explicit, attn = layer.forward_explicit(x)
    ((explicit - target) ** 2).sum().backward()

    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    # Gradients reach ~1e2 here: compare relative to each tensor's scale (float32 round-off is ~1e-7).
    _assert_close_scaled(grad_x_fused, x.grad)
    for name, p in layer.named_parameters():
        _assert_close_scaled(grads_fused[name], p.grad, name)
    assert attn.shape == (3, HEADS, GRID * GRID, GRID * GRID)


def test_lpa_explicit_equals_single_softmax_of_mixed_logit():
    layer = _randomise(LPAttention(DIM, HEADS, GRID))
    x = torch.randn(2, GRID * GRID, DIM)
    _, attn = layer.forward_explicit(x)
    q, k = layer.qk(x).chunk(2, dim=-1)
    q = q.view(2, -1, HEADS, DIM // HEADS).transpose(1, 2)
    k = k.view(2, -1, HEADS, DIM // HEADS).transpose(1, 2)
    content = layer.content_weight.view(1, -1, 1, 1) * (q @ k.transpose(-2, -1)) / (DIM // HEADS) ** 0.5
    position = torch.einsum("ijk,hk->hij", relative_position_features(GRID), layer.pos_weight)
    expected = (content + position).softmax(-1)
    # The denormal guard may only change probabilities below exp(-DENORMAL_GUARD).
    torch.testing.assert_close(attn, expected, atol=1e-12, rtol=1e-5)


@pytest.mark.parametrize("attn_type", sorted(ATTENTION_LAYERS))
def test_maps_are_row_stochastic_and_match_forward(attn_type):
    layer = _randomise(ATTENTION_LAYERS[attn_type](DIM, HEADS, GRID))
    x = torch.randn(2, GRID * GRID, DIM)
    out, attn = layer.forward_explicit(x)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, HEADS, GRID * GRID))
    assert (attn >= 0).all()
    torch.testing.assert_close(layer(x), out, atol=1e-5, rtol=1e-5)


def test_local_heads_start_local_and_focus_on_their_offsets():
    grid = 8
    x = torch.randn(4, grid * grid, DIM)
    lpa = LPAttention(DIM, HEADS, grid)
    _, attn = lpa.forward_explicit(x)
    _, mhsa_attn = MHSAttention(DIM, HEADS, grid).forward_explicit(x)
    distances = relative_distances(grid)
    lpa_dist = (attn * distances).sum(-1).mean(dim=(0, 2))  # per head, patch units
    mhsa_dist = (mhsa_attn * distances).sum(-1).mean(dim=(0, 2))
    assert lpa.num_local_heads == 9
    assert lpa_dist.max() < 0.5 * mhsa_dist.min(), (lpa_dist, mhsa_dist)
    # Query patch (3, 3) of the 8x8 grid: head h looks hardest at (3, 3) + Delta_h, Delta_h in {-1, 0, 1}^2.
    query = 3 * grid + 3
    for head in range(9):
        dy, dx = divmod(head, 3)
        target = (3 + dy - 1) * grid + (3 + dx - 1)
        assert attn[:, head, query].argmax(-1).eq(target).all(), head


def test_content_weights_have_configured_scale():
    torch.manual_seed(1)
    weak = LPAttention(64, 64, GRID, content_init_std=0.02, locality_strength=1.0)
    torch.manual_seed(1)
    strong = LPAttention(64, 64, GRID, content_init_std=0.02, locality_strength=2.0)
    torch.testing.assert_close(strong.content_weight, 2.0 * weak.content_weight)
    assert 0.01 < weak.content_weight.std().item() < 0.03
    assert weak.content_weight.abs().max().item() < 0.1
    assert weak.content_factor.item() == 1.0


def test_value_projection_starts_as_identity_for_positional_layers():
    for cls in (LPAttention, GPSAttention):
        layer = cls(DIM, HEADS, GRID)
        torch.testing.assert_close(layer.v.weight, torch.eye(DIM))
    assert torch.equal(GPSAttention(DIM, HEADS, GRID).gating_param, torch.ones(HEADS))


@pytest.mark.parametrize("content_scale", [1.0, 10.0, 40.0, 100.0])
def test_lpa_is_exact_at_any_content_scale(content_scale):
    # Trained content weights spread the content logits far beyond the denormal guard's 40: the guarded
    # fused and explicit paths must still equal the unclamped single softmax, computed here directly.
    torch.manual_seed(2)
    grid, heads, dim = 8, 12, 48
    x = torch.randn(16, grid * grid, dim)
    for kernel in ("matmul", "sdpa"):
        layer = LPAttention(dim, heads, grid, kernel=kernel)
        with torch.no_grad():
            layer.content_weight.normal_(0.0, 1.0).mul_(content_scale)
        q, k = layer.qk(x).chunk(2, dim=-1)
        q = q.view(16, -1, heads, dim // heads).transpose(1, 2)
        k = k.view(16, -1, heads, dim // heads).transpose(1, 2)
        v = layer.v(x).view(16, -1, heads, dim // heads).transpose(1, 2)
        content = layer.content_weight.view(1, -1, 1, 1) * (q @ k.transpose(-2, -1)) * (dim // heads) ** -0.5
        position = torch.einsum("ijk,hk->hij", relative_position_features(grid), layer.pos_weight)
        exact = (content + position).softmax(-1)  # no clamp at all
        out_exact = layer.proj((exact @ v).transpose(1, 2).reshape(16, grid * grid, dim))
        out, attn = layer.forward_explicit(x)
        assert (attn - exact).abs().max() < 1e-5
        _assert_close_scaled(out, out_exact, "explicit")
        _assert_close_scaled(layer(x), out_exact, kernel)
    # The old rule (clamping the position logits alone at row max - 40) moves whole rows at this scale.
    old = torch.maximum(position, position.amax(-1, keepdim=True) - DENORMAL_GUARD)
    moved = ((content + old).softmax(-1) - exact).abs().max().item()
    assert (moved > 0.5) == (content_scale >= 40.0)


def test_position_logits_are_clamped_against_denormals():
    layer = LPAttention(DIM, HEADS, 8)
    logits = layer.position_logits()
    raw = torch.einsum("ijk,hk->hij", layer.rel_pos, layer.pos_weight)
    assert raw.min() < -100  # far patches of the local heads, as the design note says
    assert (logits >= logits.amax(-1, keepdim=True) - DENORMAL_GUARD - 1e-4).all()
    probs = logits.softmax(-1)
    tiny = probs[probs > 0].min()
    assert tiny >= torch.finfo(torch.float32).tiny  # no denormals


def test_relative_geometry():
    feats = relative_position_features(3)
    # token 0 = (x0, y0), token 4 = (x1, y1): offset (1, 1), squared length 2
    assert feats[0, 4].tolist() == [1.0, 1.0, 2.0]
    assert feats[4, 0].tolist() == [-1.0, -1.0, 2.0]
    dist = relative_distances((2, 3))
    assert dist.shape == (6, 6)
    assert dist[0, 5].item() == pytest.approx(5**0.5)  # (0, 0) -> (x2, y1)


def test_local_position_weights_centre_on_offsets():
    weights, num_local = local_position_weights(12, locality_strength=1.5)
    assert num_local == 9
    feats = relative_position_features(5)
    centre = 12  # patch (2, 2) of the 5x5 grid
    for head in range(9):
        dy, dx = divmod(head, 3)
        best = (feats[centre] @ weights[head]).argmax().item()
        assert best == (2 + dy - 1) * 5 + (2 + dx - 1)
        assert weights[head, 2].item() == -1.5


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="does not divide"):
        LPAttention(10, 3, GRID)
    with pytest.raises(ValueError, match="unknown LPA kernel"):
        LPAttention(DIM, HEADS, GRID, kernel="flash")


def test_collect_attention_maps_leaves_nothing_behind():
    model = torch.nn.Sequential(LPAttention(DIM, HEADS, GRID), GPSAttention(DIM, HEADS, GRID))
    x = torch.randn(2, GRID * GRID, DIM)
    maps = collect_patch_attention_maps(model, lambda: model(x))
    assert [m.shape for m in maps] == [(2, HEADS, 16, 16)] * 2
    assert all(not m.requires_grad for m in maps)
    assert all(layer.attention_map is None and not layer.record_attention for layer in model)
    copy.deepcopy(model)  # nothing un-copyable cached
    with pytest.raises(ValueError, match="no PatchAttention"):
        collect_patch_attention_maps(torch.nn.Linear(2, 2), lambda: None)
