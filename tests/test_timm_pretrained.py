"""Pretrained timm ViTs done right (issue 30.3): the model keeps its own input size and patch, the data is brought to
its size and normalisation, the weights come from a local file (timm's ``pretrained_cfg_overlay``), no network; and
LPA converted inside it (30.4) starts as the pretrained ViT."""
import pytest
import timm
import torch

from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.data import datasets as data_module
from avalanche_lpa.runner import build_model, run
from avalanche_lpa.runner.benchmark import build_benchmark
from avalanche_lpa.runner.model import model_input

from .fake_datasets import make_fake_fashion_mnist_gz
from .test_damaged_data import no_network  # noqa: F401 (a fixture)

ARCH = dict(embed_dim=16, depth=2, num_heads=2)  # a ViT-Tiny/16 made tiny: 224 px, patch 16, 196 tokens


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", **ARCH)  # as timm publishes it: 1000 classes, 224 px
    path = tmp_path / "vit_tiny_weights.pth"
    torch.save(source.state_dict(), path)
    return path, source.state_dict()


def pretrained_config(tmp_path, weights_file, *extra):
    # custom_load: false: a state dict, not the .npz of JAX weights timm 0.9's default config for this name expects
    kwargs = "{" + ", ".join(f"{k}: {v}" for k, v in ARCH.items()) + f", pretrained: true, " \
             f"pretrained_cfg_overlay: {{file: '{weights_file}', custom_load: false}}" + "}"
    return load_config("fashion_mnist", [
        "model.name=timm:vit_tiny_patch16_224", f"model.kwargs={kwargs}", f"data.root={tmp_path / 'fm'}",
        "data.max_train_per_class=null", "data.max_test_per_class=null", "data.n_experiences=2",
        "data.class_order=null", "data.initial_classes=8", "strategy.epochs_first=1", "strategy.train_epochs=1",
        "strategy.finetune.epochs=1", "strategy.mem_size=10", "strategy.train_mb_size=16",
        "evaluation.locality_probe_size=8", "evaluation.progress_bar=false", "evaluation.attention_maps=0",
        f"output.dir={tmp_path / 'run'}", *extra,
    ])


def test_a_pretrained_vit_gets_its_weights_its_size_and_its_normalisation(tmp_path, monkeypatch, weights, no_network):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", make_fake_fashion_mnist_gz(tmp_path / "deb", 2))
    path, saved = weights
    config = pretrained_config(tmp_path, path)
    wanted = model_input(config)
    assert (wanted.size, wanted.mean, wanted.std) == (224, (0.5,), (0.5,))  # timm's config, grey images
    model = build_model(config, 10)
    backbone = model.backbone.state_dict()
    torch.testing.assert_close(backbone["blocks.1.attn.qkv.weight"], saved["blocks.1.attn.qkv.weight"])
    torch.testing.assert_close(backbone["patch_embed.proj.weight"], saved["patch_embed.proj.weight"].sum(1, True))
    benchmark = build_benchmark(config.data, config.seed, model_input=wanted)
    image, _, _ = benchmark.test_stream[0].dataset[0]
    assert tuple(image.shape) == (1, 224, 224)  # a 28 px Fashion-MNIST image at the model's size
    assert image.min() >= -1.0 and image.max() <= 1.0  # normalised with mean 0.5, std 0.5
    results = run(config)
    assert len(results["accuracy_matrix"]) == 2 and len(results["locality"]["layers"][-1]) == 2


def test_lpa_converted_inside_a_pretrained_vit_starts_as_that_vit(tmp_path, monkeypatch, weights, no_network):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", make_fake_fashion_mnist_gz(tmp_path / "deb", 2))
    path, _ = weights
    plain = build_model(pretrained_config(tmp_path, path), 10).eval()
    converted = build_model(pretrained_config(tmp_path, path, "model.lpa_convert=true"), 10).eval()
    x = torch.randn(2, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(converted.backbone(x), plain.backbone(x), atol=1e-5, rtol=1e-5)


def test_a_dataset_that_cannot_be_resized_is_one_line(tmp_path, weights):
    path, _ = weights
    config = pretrained_config(tmp_path, path, "data.dataset=synthetic", "data.initial_classes=null")
    with pytest.raises(ConfigError, match="synthetic loader cannot bring its images to a pretrained model's 224 px"):
        build_benchmark(config.data, config.seed, model_input=model_input(config))
