"""LPA inside a timm ViT (issue 30.4): the converted model computes what the ViT did, then its position weights
learn; the locality metric, the warm-up, the runner and the strategies treat converted layers like ours."""
import pytest
import timm
import torch

from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.layers import LPAttention, patch_attention_layers
from avalanche_lpa.metrics import measure_locality
from avalanche_lpa.models import PrefixLPAttention, convert_to_lpa, record_attention_maps
from avalanche_lpa.plugins import set_content_factor
from avalanche_lpa.runner import build_model, run


LAYOUTS = {  # prefix tokens: a class token, + 2 registers, none (average pooling)
    "class_token": {},
    "registers": {"reg_tokens": 2},
    "no_prefix": {"class_token": False, "global_pool": "avg"},
}


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=4,
                             num_classes=5, qkv_bias=True, **kwargs)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_converted_vit_computes_what_the_vit_did(layout):
    model = tiny_vit(**LAYOUTS[layout]).eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
        maps_before = record_attention_maps(model, lambda: model(x))
    assert convert_to_lpa(model) is model
    layers = patch_attention_layers(model, PrefixLPAttention)
    assert len(layers) == 2 and all(layer.num_prefix_tokens == model.num_prefix_tokens for layer in layers)
    with torch.no_grad():
        after = model(x)  # the fused path (SDPA with the position bias)
        maps_after = record_attention_maps(model, lambda: model(x))  # the explicit path
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    for old, new in zip(maps_before, maps_after):  # the patch-to-patch maps the locality metric reads
        torch.testing.assert_close(new, old, atol=1e-6, rtol=1e-5)


def test_after_conversion_the_position_term_learns_among_patches_only():
    model = tiny_vit(reg_tokens=1)
    convert_to_lpa(model)
    layer = patch_attention_layers(model, PrefixLPAttention)[0]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16)), torch.arange(8) % 5)
    loss.backward()
    assert layer.pos_weight.grad.abs().sum() > 0 and layer.content_weight.grad.abs().sum() > 0
    optimizer.step()
    assert layer.pos_weight.abs().sum() > 0
    with torch.no_grad():
        q, k, _ = layer._qkv(torch.randn(1, layer.num_prefix_tokens + 16, 24))
        bias = layer._bias(q, k)
    prefix = layer.num_prefix_tokens
    assert bias[:, :prefix].abs().sum() == 0 and bias[:, :, :prefix].abs().sum() == 0  # no position term there
    assert bias[:, prefix:, prefix:].abs().sum() > 0
    tokens = torch.randn(2, prefix + 16, 24)
    with torch.no_grad():  # the fused and explicit paths still agree once the position weights moved
        fused = layer(tokens)
        explicit, _ = layer.forward_explicit(tokens)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)


def test_the_warmup_and_the_locality_metric_see_the_converted_layers():
    model = convert_to_lpa(tiny_vit())
    assert set_content_factor(model, 0.25) == 2  # the LPA warm-up ramps converted layers as ours
    assert all(isinstance(layer, LPAttention) for layer in patch_attention_layers(model, PrefixLPAttention))
    set_content_factor(model, 1.0)
    layers = measure_locality(model, torch.randn(4, 3, 16, 16), "cpu").result()
    assert len(layers) == 2 and all(heads.shape == (4,) for heads in layers)


@pytest.mark.parametrize("kwargs, blocks, message", [
    ({"qk_norm": True}, None, "q_norm, k_norm"),
    ({}, [5], "block 5 does not exist: the model has blocks 0..1"),
    ({"dynamic_img_size": True}, None, "fixed patch grid"),
])
def test_what_cannot_be_converted_is_one_line(kwargs, blocks, message):
    with pytest.raises(ValueError, match=message):
        convert_to_lpa(tiny_vit(**kwargs), blocks)
    with pytest.raises(ValueError, match="not a timm VisionTransformer"):
        convert_to_lpa(torch.nn.Linear(2, 2))


def test_a_converted_layer_refuses_another_token_count():
    model = convert_to_lpa(tiny_vit())
    with pytest.raises(ValueError, match="expects 1 prefix tokens and a 4x4 patch grid"):
        model.blocks[0].attn(torch.randn(1, 10, 24))


TIMM_VIT = ["model.name=timm:vit_tiny_patch16_224", "model.kwargs={embed_dim: 16, depth: 2, num_heads: 2}",
            "model.lpa_convert=true"]


def converted_vit_config(tmp_path, *extra):
    return load_config(None, [
        "data.dataset=synthetic", "data.n_experiences=2", *TIMM_VIT, "strategy.train_epochs=1",
        "strategy.train_mb_size=16", "evaluation.progress_bar=false", "evaluation.locality_probe_size=16",
        f"output.dir={tmp_path / 'run'}", *extra,
    ])


@pytest.mark.parametrize("strategy", ["lpa", "naive"])
def test_a_run_trains_a_converted_timm_vit(tmp_path, strategy):
    extra = ["strategy.finetune.epochs=1", "strategy.mem_size=24", "strategy.epochs_first=1"] if strategy == "lpa" else []
    config = converted_vit_config(tmp_path, f"strategy.name={strategy}", *extra)
    model = build_model(config, 4)
    assert len(patch_attention_layers(model, PrefixLPAttention)) == 2
    results = run(config)
    assert len(results["locality"]["layers"][-1]) == 2  # the metric read both converted blocks
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert state["backbone.blocks.0.attn.pos_weight"].abs().sum() > 0  # the position weights learned


def test_lpa_convert_on_a_model_that_is_not_a_plain_vit_is_a_config_error(tmp_path):
    config = converted_vit_config(tmp_path, "model.kwargs={embed_dim: 16, depth: 2, num_heads: 2, qk_norm: true}")
    with pytest.raises(ConfigError, match="model.lpa_convert with timm:vit_tiny_patch16_224: cannot convert"):
        build_model(config, 4)
