"""LocalityViT / LPAViT: timm registry, Avalanche head, attention maps, persistence and input checks."""
import copy
import inspect
import io

import pytest
import timm
import torch
from avalanche.models import IncrementalClassifier

import avalanche_lpa.models  # noqa: F401  (registers the timm entry points)
from avalanche_lpa.layers import collect_patch_attention_maps
from avalanche_lpa.models import (
    ATTN_TYPES,
    PRESETS,
    GrowingClassifier,
    LocalityViTBackbone,
    LPAViT,
    model_keywords,
    model_name,
)
from avalanche_lpa.models import presets

from .conftest import TINY, make_tiny

REGISTERED = sorted(model_name(a, p) for a in ATTN_TYPES for p in PRESETS)


def test_every_family_member_is_registered_in_timm_by_its_own_function():
    listed = set(timm.list_models("*_vit_*"))
    assert set(REGISTERED) <= listed
    for name in REGISTERED:
        assert timm.is_model(name)
        entry = getattr(presets, name)  # written out, one function per name (grep finds it)
        assert entry.__name__ == name and entry.__module__ == presets.__name__ and entry.__doc__
        assert timm.models.get_pretrained_cfg(name).license == "mit"


@pytest.mark.parametrize("name", REGISTERED)
def test_create_model_builds_the_preset_and_runs(name):
    attn_type, _, preset = name.split("_")
    model = timm.create_model(name, pretrained_cfg_overlay=dict(num_classes=100))
    cfg = PRESETS[preset]
    assert model.attn_type == attn_type
    assert model.img_size == (cfg["img_size"],) * 2
    assert len(model.backbone.blocks) == cfg["depth"] and len(model.backbone.cls_blocks) == 1
    assert isinstance(model.head, IncrementalClassifier)  # growing Avalanche head by default
    x = torch.randn(1, 3, cfg["img_size"], cfg["img_size"])
    with torch.no_grad():
        assert model(x).shape == (1, 2)


def test_cifar_preset_has_the_papers_size():
    params = sum(p.numel() for p in timm.create_model("lpa_vit_cifar", num_classes=100).parameters())
    assert 10.6e6 < params < 10.8e6  # design note: ~10.7 M


@pytest.mark.parametrize("name", ["lpa_vit_tiny", "gpsa_vit_tiny", "mhsa_vit_tiny"])
def test_create_model_overrides_and_timm_keywords(name, tmp_path):
    model = timm.create_model(
        name, img_size=28, in_chans=1, num_classes=10, cache_dir=str(tmp_path), pretrained_cfg_overlay={}
    )
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 10
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert model.pretrained_cfg["architecture"] == name


def test_pretrained_weights_give_a_clear_error():
    with pytest.raises(ValueError, match="no pretrained weights exist for lpa_vit_tiny"):
        timm.create_model("lpa_vit_tiny", pretrained=True)


@pytest.mark.parametrize("attn_type", ATTN_TYPES)
def test_attention_maps_one_per_local_block(attn_type):
    model = make_tiny(attn_type).eval()
    x = torch.randn(3, 1, 8, 8)
    maps = model.get_attention_maps(x)
    assert len(maps) == TINY["depth"]
    for attn in maps:
        assert attn.shape == (3, 9, 16, 16)
        torch.testing.assert_close(attn.sum(-1), torch.ones(3, 9, 16))
    # Recording takes the explicit path (the probabilities materialised); its logits equal the fused path's.
    recorded = []
    collect_patch_attention_maps(model, lambda: recorded.append(model.get_features(x)))
    torch.testing.assert_close(recorded[0], model.get_features(x), atol=1e-5, rtol=1e-5)
    assert all(layer.attention_map is None for layer in model.attention_layers())


def test_timm_style_api():
    model = make_tiny(num_classes=5).eval()
    x = torch.randn(2, 1, 8, 8)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 1 + 16, 18)
    torch.testing.assert_close(model.forward_head(tokens), model(x))
    torch.testing.assert_close(model.forward_head(tokens, pre_logits=True), model.get_features(x))
    torch.testing.assert_close(model.feature_extractor(x), model.get_features(x))
    assert model.classifier is model.head and model.get_classifier() is model.head
    model.reset_classifier(0)
    assert model(x).shape == (2, 18)
    model.reset_classifier(7)
    assert model(x).shape == (2, 7)
    model.reset_classifier(None)
    assert isinstance(model.head, GrowingClassifier)
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)


def test_lpa_vit_is_the_lpa_case():
    model = LPAViT(**TINY)
    assert model.attn_type == "lpa"
    assert all(type(layer).__name__ == "LPAttention" for layer in model.attention_layers())
    with pytest.raises(ValueError, match="LocalityViT"):
        LPAViT(attn_type="gpsa", **TINY)


def test_rectangular_images_and_any_channel_count():
    model = make_tiny(img_size=(8, 12), in_chans=5)
    assert model.backbone.grid_size == (4, 6)
    assert model(torch.randn(2, 5, 8, 12)).shape == (2, 2)
    assert model.get_attention_maps(torch.randn(1, 5, 8, 12))[0].shape == (1, 9, 24, 24)


@pytest.mark.parametrize(
    "shape, message",
    [((2, 3, 8, 8), "got 3x8x8"), ((2, 1, 16, 16), "got 1x16x16"), ((2, 64), "2-d tensor")],
)
def test_wrong_input_is_refused_with_expected_and_got(shape, message):
    model = make_tiny()
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 1, 8, 8\]") as info:
        model(torch.randn(*shape))
    assert message in str(info.value)


def test_keywords_are_stated_once_and_foreign_attention_keywords_are_refused():
    # The model takes exactly the backbone's keywords (but final_norm, which the head decides) plus its head's.
    backbone = set(inspect.signature(LocalityViTBackbone.__init__).parameters) - {"self", "final_norm"}
    assert set(model_keywords()) == backbone | {"num_classes", "initial_out_features", "head_type"}
    with pytest.raises(ValueError, match="content_init_std: not a keyword of GPSAttention"):
        make_tiny("gpsa", content_init_std=0.05)
    with pytest.raises(ValueError, match="lpa_kernel|kernel: not a keyword of MHSAttention"):
        make_tiny("mhsa", lpa_kernel="sdpa")
    with pytest.raises(TypeError, match="unexpected keyword.*width"):
        make_tiny(width=3)
    lpa = make_tiny("lpa", content_init_std=0.05, locality_strength=2.0)
    assert lpa.attention_layers()[0].locality_strength == 2.0


def test_empty_batch_gives_an_empty_output_and_sizes_must_be_positive():
    model = make_tiny(num_classes=4)
    assert model(torch.zeros(0, 1, 8, 8)).shape == (0, 4)
    for bad in (dict(num_heads=0), dict(embed_dim=0), dict(depth=0), dict(patch_size=0), dict(img_size=0)):
        with pytest.raises(ValueError, match="must be positive"):
            make_tiny(**bad)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        make_tiny(img_size=10, patch_size=4)
    with pytest.raises(ValueError, match="does not divide embed_dim"):
        make_tiny(embed_dim=20)
    with pytest.raises(ValueError, match="unknown attn_type"):
        make_tiny("conv")
    with pytest.raises(ValueError, match="num_classes"):
        make_tiny(num_classes=-3)


@pytest.mark.parametrize("attn_type", ATTN_TYPES)
def test_deepcopy_and_state_dict_round_trip(attn_type):
    model = make_tiny(attn_type).eval()
    x = torch.randn(2, 1, 8, 8)
    twin = copy.deepcopy(model)
    torch.testing.assert_close(twin(x), model(x))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fresh = make_tiny(attn_type).eval()
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    torch.testing.assert_close(fresh(x), model(x))


def test_grown_head_loads_into_a_freshly_built_model(cil_benchmark):
    model = make_tiny().train()
    for experience in cil_benchmark.train_stream:
        model.head.adaptation(experience)  # what a strategy does before training on the experience
    assert model.head.classifier.out_features == 6
    assert model.head.active_units.tolist() == [1] * 6
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    fresh = make_tiny().eval()
    assert fresh.head.classifier.out_features == 2
    fresh.load_state_dict(model.state_dict())
    assert fresh.head.classifier.out_features == 6
    torch.testing.assert_close(fresh(x), model(x))


@pytest.mark.parametrize("keywords, message", [
    ({"drop_path_rate": 1.5}, r"drop_path_rate=1.5: dropout and drop-path rates are probabilities in \[0, 1\)"),
    ({"attn_drop_rate": -0.1}, r"attn_drop_rate=-0.1: dropout and drop-path rates"),
    ({"initial_out_features": -3}, "initial_out_features=-3: the growing head's first width is at least 0"),
    ({"content_init_std": -1.0}, "content_init_std=-1.0: a standard deviation is at least 0"),
])  # fmt: skip
def test_constructor_arguments_out_of_range_are_refused_when_built(keywords, message):
    # Before: the first training forward (drop path), a negative tensor size, torch's normal_() failed instead.
    with pytest.raises(ValueError, match=message):
        LPAViT(img_size=8, patch_size=2, in_chans=1, embed_dim=18, depth=1, num_heads=9, **keywords)


def test_a_timm_classifier_refuses_per_experience_heads_of_a_fixed_width():
    from avalanche_lpa.models import TimmClassifier

    with pytest.raises(ValueError, match="head_type='per_experience' grows with the stream; leave num_classes=None"):
        TimmClassifier(torch.nn.Identity(), num_features=4, num_classes=10, head_type="per_experience")
