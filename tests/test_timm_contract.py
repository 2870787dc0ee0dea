"""Our models keep timm's model contract (issue 30.5), checked over every registered LocalityViT name as timm's own
model tests are: a complete default config for timm's data helpers, ``num_classes=`` and ``reset_classifier``,
``forward_features`` / ``forward_head`` / ``forward_intermediates`` and ``features_only=True``."""
import pytest
import timm
import torch
from timm.data import create_transform, resolve_data_config

import avalanche_lpa.models  # noqa: F401  (registers the timm names)
from avalanche_lpa.models import ATTN_TYPES, PRESETS, model_name

NAMES = [model_name(attn, preset) for attn in ATTN_TYPES for preset in PRESETS]
SMALL = dict(embed_dim=18, depth=2, num_heads=9)  # the preset's image and patch size, a tiny width


def _images(model, batch=2):
    channels, (height, width) = model.in_chans, model.img_size
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", NAMES)
def test_the_default_config_gives_the_models_transforms(name):
    model = timm.create_model(name, **SMALL)
    config = resolve_data_config({}, model=model)
    assert config["input_size"] == (model.in_chans, *model.img_size)
    assert len(config["mean"]) == len(config["std"]) == model.in_chans and config["crop_pct"] == 1.0
    transform = create_transform(**config)
    from PIL import Image

    image = Image.new("RGB", (model.img_size[1] + 8, model.img_size[0] + 8))
    assert tuple(transform(image).shape) == config["input_size"]
    cfg = model.pretrained_cfg
    assert cfg["first_conv"] == "backbone.patch_embed.proj" and cfg["classifier"] == "classifier"
    assert dict(model.named_modules())[cfg["first_conv"]].in_channels == model.in_chans
    assert cfg["fixed_input_size"]  # one grid of position embeddings


def test_the_data_config_follows_size_and_channel_overrides():
    # Before: (3, 32, 32) and three-channel statistics for a 28 px grey model; its transform made images it refused.
    from PIL import Image

    model = timm.create_model("lpa_vit_tiny", img_size=28, in_chans=1)
    config = resolve_data_config({}, model=model)
    assert config["input_size"] == (1, 28, 28) and len(config["mean"]) == len(config["std"]) == 1
    image = create_transform(**config)(Image.new("L", (28, 28)))
    assert model(image[None]).shape[0] == 1


@pytest.mark.parametrize("name", NAMES)
def test_classes_heads_and_the_forward_pieces(name):
    model = timm.create_model(name, num_classes=7, **SMALL).eval()
    x = _images(model)
    with torch.no_grad():
        logits = model(x)
        tokens = model.forward_features(x)
        assert logits.shape == (2, 7)
        torch.testing.assert_close(model.forward_head(tokens), logits)
        assert model.forward_head(tokens, pre_logits=True).shape == (2, model.num_features)
        model.reset_classifier(3)
        assert model(x).shape == (2, 3)


@pytest.mark.parametrize("name", NAMES)
def test_forward_intermediates_and_features_only(name):
    model = timm.create_model(name, num_classes=5, **SMALL).eval()
    x = _images(model)
    rows, cols = model.backbone.grid_size
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))  # the same forward, with its blocks' tokens
        assert [t.shape for t in intermediates] == [(2, model.embed_dim, rows, cols)] * SMALL["depth"]
        last = model.forward_intermediates(x, indices=1, output_fmt="NLC", intermediates_only=True, stop_early=True)
        torch.testing.assert_close(last[0], intermediates[-1].flatten(2).transpose(1, 2))
        with pytest.raises(ValueError, match="local blocks"):
            model.forward_intermediates(x, indices=[5])
    features = timm.create_model(name, features_only=True, out_indices=(0, 1), **SMALL).eval()
    assert features.feature_info.channels() == [model.embed_dim] * 2
    assert features.feature_info.reduction() == [model.backbone.patch_embed.patch_size[0]] * 2
    with torch.no_grad():
        outs = features(x)
    # timm >= 1.0: tokens on the patch grid (forward_intermediates); timm 0.9 hooks the blocks: tokens [B, N, C]
    assert [tuple(o.shape) for o in outs] in ([(2, model.embed_dim, rows, cols)] * 2,
                                              [(2, rows * cols, model.embed_dim)] * 2)


@pytest.mark.parametrize("name", NAMES)
def test_torch_fx_traces_the_fused_path(name):
    model = timm.create_model(name, num_classes=4, **SMALL).eval()
    traced = torch.fx.symbolic_trace(model)
    x = _images(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("attn_type", ATTN_TYPES)
def test_a_forward_pass_asks_torch_fx_without_its_deprecated_warning(attn_type, monkeypatch):
    # torch 2.14 logs "is_fx_tracing will return true for both fx.symbolic_trace and torch.export" at every
    # is_fx_tracing() call: a line of torch's on the console of every run. The models ask is_fx_symbolic_tracing().
    def warned():
        raise AssertionError("the model called torch.fx's deprecated is_fx_tracing()")
    if hasattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing"):
        monkeypatch.setattr(torch.fx._symbolic_trace, "is_fx_tracing_warning", warned, raising=False)
    model = timm.create_model(model_name(attn_type, "tiny"), num_classes=4, **SMALL)
    model(_images(model)).sum().backward()
    traced = torch.fx.symbolic_trace(model.eval())  # and a trace still leaves the input checks out
    assert traced(_images(model)).shape == (2, 4)


@pytest.mark.slow
@pytest.mark.parametrize("attn_type", ATTN_TYPES)
def test_torch_export_and_torch_compile_capture_the_model(attn_type):
    # TorchScript is not offered: torch.jit.script is deprecated in favour of these two (torch 2.14 says so itself).
    model = timm.create_model(model_name(attn_type, "tiny"), num_classes=4, **SMALL).eval()
    x = _images(model)
    with torch.no_grad():
        expected = model(x)
        exported = torch.export.export(model, (x,)).module()
        torch.testing.assert_close(exported(x), expected, atol=1e-6, rtol=0)
        compiled = torch.compile(model, backend="eager")  # dynamo's capture; the inductor backend takes minutes here
        torch.testing.assert_close(compiled(x), expected, atol=1e-6, rtol=0)
