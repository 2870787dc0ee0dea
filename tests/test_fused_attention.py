"""LPA and GPSA at the cost of plain attention (issue 28.1-2): LPA as one mask-free attention call over queries and
keys extended by position features, GPSA as one attention call plus its shared position term; both equal their
explicit paths in outputs and gradients, on square and non-square grids, at any content scale, under bf16 autocast
within a stated tolerance, and LPA's warm-up factor still applies."""
import pytest
import torch

from avalanche_lpa.layers import GPSAttention, LPAttention
from avalanche_lpa.layers.position import to_grid

DIM, HEADS = 48, 12  # 12 heads: 9 local (3 x 3 offsets) and 3 random, as the paper's
GRIDS = [8, (6, 9), 14]


def _layer(kind, grid, content_scale=1.0):
    torch.manual_seed(0)
    layer = LPAttention(DIM, HEADS, grid, kernel="fused") if kind == "lpa" else GPSAttention(DIM, HEADS, grid)
    with torch.no_grad():
        if kind == "lpa":
            layer.content_weight.mul_(content_scale)
        else:
            layer.gating_param.normal_()  # gates away from their init: both terms matter
        layer.qk.weight.mul_(3.0)  # sharper content logits than at init
    return layer


def _inputs(grid, batch=2):
    rows, cols = to_grid(grid)
    return torch.randn(batch, rows * cols, DIM, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("grid", GRIDS, ids=str)
@pytest.mark.parametrize("kind, content_scale", [("lpa", 1.0), ("lpa", 50.0), ("gpsa", 1.0)])
def test_fused_outputs_and_gradients_equal_the_explicit_path(kind, content_scale, grid):
    layer = _layer(kind, grid, content_scale)
    x = _inputs(grid).requires_grad_(True)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))

    def grads(forward):
        layer.zero_grad()
        x.grad = None
        out = forward(x)
        (out * weights).sum().backward()
        return out.detach(), {name: p.grad.clone() for name, p in layer.named_parameters()}, x.grad.clone()

    fused, fused_grads, fused_x = grads(layer.forward_fused)
    explicit, explicit_grads, explicit_x = grads(lambda t: layer.forward_explicit(t)[0])
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)
    for name, grad in explicit_grads.items():  # content weight, position weights, q/k/v, gate, projection
        scale = grad.abs().max().clamp_min(1.0)
        assert (fused_grads[name] - grad).abs().max() <= 1e-5 * scale, name
    assert (fused_x - explicit_x).abs().max() <= 1e-5 * explicit_x.abs().max().clamp_min(1.0)


def test_fused_lpa_on_the_384_px_grid_is_float32_exact_to_2e_5():
    # 24 x 24 patches: the expanded quadratic sums terms up to ~300 before they cancel, so float32 rounds the
    # logits to ~3e-5 of that; the probabilities and outputs stay within 2e-5 of the explicit path's.
    layer = _layer("lpa", 24, 50.0)
    x = _inputs(24, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(layer.forward_fused(x), layer.forward_explicit(x)[0], atol=2e-5, rtol=0)


@pytest.mark.parametrize("kind", ["lpa", "gpsa"])
def test_under_bf16_autocast_the_fused_path_stays_as_close_to_float32_as_the_explicit_one(kind):
    layer = _layer(kind, 14, 50.0)
    x = _inputs(14)
    with torch.no_grad():
        reference = layer.forward_explicit(x)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fused = layer.forward_fused(x).float()
            explicit = layer.forward_explicit(x)[0].float()
    # bfloat16 keeps 8 bits (~4e-3 relative per rounding; the content logits at 50x scale add a few of them): within
    # 2% of the output's scale. The position logits stay float32-accurate (their key features are exact integers, the
    # query features a rounded value plus its rounding error), so the fused path is no worse than the explicit one.
    error = (fused - reference).abs().max()
    assert error <= 0.02 * reference.abs().max()
    assert error <= (explicit - reference).abs().max()


def test_the_warm_up_factor_scales_the_content_term_of_the_fused_path():
    layer = _layer("lpa", 8, 50.0)
    x = _inputs(8)
    with torch.no_grad():
        full = layer.forward_fused(x)
        layer.content_factor.fill_(0.0)  # LPAWarmupPlugin's start: position logits only
        position_only = layer.forward_fused(x)
        torch.testing.assert_close(position_only, layer.forward_explicit(x)[0], atol=1e-5, rtol=0)
        layer.content_weight.zero_()
        torch.testing.assert_close(position_only, layer.forward_fused(x), atol=1e-6, rtol=0)
    assert (full - position_only).abs().max() > 1e-2


def test_gpsa_with_attention_dropout_in_training_takes_the_explicit_path():
    layer = GPSAttention(DIM, HEADS, 8, attn_drop=0.5).train()
    x = _inputs(8)
    torch.manual_seed(3)
    dropped = layer(x)
    torch.manual_seed(3)
    assert torch.equal(dropped, layer.forward_explicit(x)[0])  # same dropout draws: the same path
