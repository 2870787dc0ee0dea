"""Locality of timm models: attention maps of timm's ViT/DeiT and ConViT, prefix tokens, the adapter registry."""
import math

import pytest
import timm
import torch
from avalanche.training import Naive
from torch import nn

from avalanche_lpa.data import synthetic_benchmark
from avalanche_lpa.metrics import (
    MeanAttentionDistance,
    attention_layers,
    attention_sites,
    cil_evaluator,
    collect_attention_maps,
    draw_probe,
    mean_attention_distance,
    measure_locality,
    record_dropout_input,
    register_attention_adapter,
)

BASE = "Locality_Stream/eval_phase/test_stream"
GRID = 4  # img 16, patch 4


def tiny_vit(name: str = "vit_tiny_patch16_224", embed_dim: int = 32, num_heads: int = 2, **kwargs) -> nn.Module:
    return timm.create_model(name, pretrained=False, img_size=16, patch_size=4, embed_dim=embed_dim, depth=2,
                             num_heads=num_heads, num_classes=0, **kwargs).eval()


def uniform_grid_distance(side: int) -> float:
    """Mean distance between all pairs of patches of a side x side grid: uniform attention, by hand."""
    cells = [(x, y) for y in range(side) for x in range(side)]
    return sum(math.hypot(xj - xi, yj - yi) for xi, yi in cells for xj, yj in cells) / len(cells) ** 2


# Prefix tokens: CLS (ViT), CLS + distillation token (DeiT distilled), CLS + 3 registers, none (avg pooling).
PREFIX_VARIANTS = {
    "cls": ("vit_tiny_patch16_224", {}, 1),
    "distilled": ("deit_tiny_distilled_patch16_224", {}, 2),
    "registers": ("vit_tiny_patch16_224", {"reg_tokens": 3}, 4),
    "no_prefix": ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}, 0),
}


@pytest.mark.parametrize("variant", sorted(PREFIX_VARIANTS))
@torch.no_grad()
def test_uniform_attention_gives_the_uniform_distance_without_prefix_tokens(variant):
    name, kwargs, prefix = PREFIX_VARIANTS[variant]
    model = tiny_vit(name, **kwargs)
    assert model.num_prefix_tokens == prefix
    for block in model.blocks:  # zero queries and keys: every token attends to all tokens equally
        dim = block.attn.qkv.in_features
        block.attn.qkv.weight[: 2 * dim] = 0.0
        block.attn.qkv.bias[: 2 * dim] = 0.0
    metric = MeanAttentionDistance()
    metric.update_from_model(model, torch.randn(3, 3, 16, 16))
    expected = uniform_grid_distance(GRID)  # 2.0083...; a row with the prefix mass left in would give less
    assert len(metric.result()) == 2
    for heads in metric.result():
        assert torch.allclose(heads, torch.full((2,), expected), atol=1e-5)


@torch.no_grad()
def test_identity_attention_gives_zero_distance():
    model = tiny_vit(embed_dim=64, num_heads=2)
    tokens = 1 + GRID * GRID
    model.patch_embed.proj.weight.zero_()
    model.patch_embed.proj.bias.zero_()
    model.cls_token.zero_()
    model.pos_embed.zero_()
    model.pos_embed[0, torch.arange(tokens), torch.arange(tokens)] = 1.0  # token i = one-hot e_i
    for block in model.blocks:
        for layer in (block.attn.proj, block.mlp.fc2):  # blocks pass the tokens on unchanged
            layer.weight.zero_()
            layer.bias.zero_()
        qkv = block.attn.qkv
        qkv.weight.zero_()
        qkv.bias.zero_()
        for head in range(2):  # q = k = 4 * (first 32 dims of the normalised token): self-similarity dominates
            for offset in (0, 64):
                rows = slice(offset + 32 * head, offset + 32 * (head + 1))
                qkv.weight[rows, :32] = 4.0 * torch.eye(32)
    x = torch.randn(2, 3, 16, 16)
    maps = collect_attention_maps(model, lambda: model(x))
    assert all(torch.allclose(attn, torch.eye(GRID * GRID).expand_as(attn), atol=1e-6) for attn in maps)
    result = measure_locality(model, x, "cpu").result()
    assert all(torch.allclose(heads, torch.zeros(2), atol=1e-6) for heads in result)


@torch.no_grad()
def test_maps_are_the_probabilities_of_the_explicit_path():
    model = tiny_vit(reg_tokens=2)  # 3 prefix tokens
    inputs = {}
    handles = [block.attn.register_forward_pre_hook(lambda m, args, i=i: inputs.__setitem__(i, args[0]))
               for i, block in enumerate(model.blocks)]
    x = torch.randn(4, 3, 16, 16)
    maps = collect_attention_maps(model, lambda: model(x))
    for handle in handles:
        handle.remove()
    for i, block in enumerate(model.blocks):
        attn, tokens = block.attn, inputs[i]
        b, t, c = tokens.shape
        q, k, _ = attn.qkv(tokens).reshape(b, t, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
        probs = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)[..., 3:, 3:]
        expected = probs / probs.sum(dim=-1, keepdim=True)
        assert maps[i].shape == (4, 2, 16, 16)
        assert torch.allclose(maps[i], expected, atol=1e-6)
        assert torch.allclose(maps[i].sum(dim=-1), torch.ones(4, 2, 16), atol=1e-6)


def test_fused_attention_is_restored_also_when_the_forward_raises():
    model = tiny_vit()
    model.blocks[0].attn.fused_attn, model.blocks[1].attn.fused_attn = True, False  # each module's own setting
    seen = []
    collect_attention_maps(model, lambda: (seen.append([b.attn.fused_attn for b in model.blocks]),
                                           model(torch.randn(2, 3, 16, 16))))
    assert seen == [[False, False]]  # probed on the explicit path ...
    assert [b.attn.fused_attn for b in model.blocks] == [True, False]  # ... and set back afterwards

    def boom(module, args):
        raise RuntimeError("boom")

    handle = model.blocks[1].register_forward_pre_hook(boom)
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        measure_locality(model, torch.randn(2, 3, 16, 16), "cpu")
    handle.remove()
    assert [b.attn.fused_attn for b in model.blocks] == [True, False]
    assert all(not b.attn.attn_drop._forward_pre_hooks for b in model.blocks)  # no recording hook left behind
    assert model.training  # measure_locality restores the mode too


@torch.no_grad()
def test_convit_gpsa_and_mhsa_match_timms_own_attention():
    model = timm.create_model("convit_tiny", pretrained=False, img_size=16, patch_size=4, embed_dim=8, depth=2,
                              num_heads=4, local_up_to_layer=1, num_classes=0).eval()
    gpsa, mhsa = model.blocks[0].attn, model.blocks[1].attn
    assert [type(gpsa).__name__, type(mhsa).__name__] == ["GPSA", "MHSA"]
    with torch.no_grad():
        gpsa.gating_param.fill_(0.0)  # half content, half position: both parts of GPSA matter
    inputs = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, m=m: inputs.__setitem__(m, args[0])) for m in (gpsa, mhsa)]
    x = torch.randn(5, 3, 16, 16)
    metric = MeanAttentionDistance()
    metric.update_from_model(model, x)
    for handle in handles:
        handle.remove()
    local, global_ = metric.result()
    # GPSA runs on the 16 patches only: timm's own probabilities, no prefix.
    assert torch.allclose(local, mean_attention_distance(gpsa.get_attention(inputs[gpsa]), GRID), atol=1e-6)
    # MHSA runs after ConViT adds its CLS token: 17 tokens, the CLS row and column left out.
    tokens = inputs[mhsa]
    b, t, c = tokens.shape
    q, k, _ = mhsa.qkv(tokens).reshape(b, t, 3, 4, c // 4).permute(2, 0, 3, 1, 4)
    probs = ((q @ k.transpose(-2, -1)) * mhsa.scale).softmax(dim=-1)[..., 1:, 1:]
    expected = mean_attention_distance(probs / probs.sum(dim=-1, keepdim=True), GRID)
    assert t == 17 and torch.allclose(global_, expected, atol=1e-6)


def test_cil_evaluator_on_a_timm_deit_inside_naive():
    torch.manual_seed(0)
    benchmark = synthetic_benchmark(n_experiences=2, classes_per_experience=2, img_size=16, in_chans=3)
    model = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=16, patch_size=4, embed_dim=24,
                              depth=2, num_heads=3, num_classes=4)
    evaluator = cil_evaluator(loggers=[], probe_size=16)
    strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=1, eval_mb_size=64,
                     evaluator=evaluator)
    results = []
    for experience in benchmark.train_stream:
        strategy.train(experience)
        results.append(strategy.eval(benchmark.test_stream))
    expected_keys = {BASE} | {f"{BASE}/Layer{l:02d}" for l in range(2)}
    expected_keys |= {f"{BASE}/Layer{l:02d}/Head{h:02d}" for l in range(2) for h in range(3)}
    for result in results:
        assert {k for k in result if k.startswith("Locality")} == expected_keys
        assert any(k.startswith("Top1_Acc_Stream") for k in result)
    probe, _ = draw_probe(benchmark.test_stream, 16, 0)
    model.eval()
    with torch.no_grad():
        maps = collect_attention_maps(model, lambda: model(probe))
    for layer, attn in enumerate(maps):
        heads = mean_attention_distance(attn, GRID)
        assert results[-1][f"{BASE}/Layer{layer:02d}"] == pytest.approx(float(heads.mean()), abs=1e-5)
        assert results[-1][f"{BASE}/Layer{layer:02d}/Head02"] == pytest.approx(float(heads[2]), abs=1e-5)
    assert all(block.attn.fused_attn == timm.layers.use_fused_attn() for block in model.blocks)


class ToyAttention(nn.Module):
    """A user's attention family: fixed attention logits over a 3x3 grid, probabilities through ``drop``."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.drop = nn.Dropout(0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.drop(self.logits.softmax(dim=-1).expand(x.shape[0], -1, -1, -1))
        return (attn.mean(dim=1) @ x)


def test_a_registered_family_is_measured_and_an_unknown_one_is_named():
    class SubclassedAttention(timm.models.vision_transformer.Attention):
        pass

    model = nn.Sequential(nn.Identity(), ToyAttention(torch.zeros(1, 9, 9)))
    with pytest.raises(ValueError, match=r"no attention layer of a supported family \(.*PatchAttention.*Attention"
                                         r".*GPSA.*MHSA.*register_attention_adapter"):
        MeanAttentionDistance().update_from_model(model, torch.randn(2, 9, 4))
    register_attention_adapter(ToyAttention, lambda module: record_dropout_input(module.drop))
    assert attention_layers(model) == [model[1]] and attention_sites(model)[0].grid_size is None
    metric = MeanAttentionDistance()
    metric.update_from_model(model, torch.randn(2, 9, 4))  # no grid from the model: 9 tokens give a 3x3 grid
    assert torch.allclose(metric.result()[0], torch.tensor([uniform_grid_distance(3)]), atol=1e-6)
    # A subclass of a registered class uses its parent's adapter.
    assert isinstance(attention_layers(nn.Sequential(SubclassedAttention(8)))[0], SubclassedAttention)
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_attention_adapter(int, lambda module: None)
