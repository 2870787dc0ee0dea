"""bf16 and fp16 autocast as a strategy switch (fp16 with loss scaling), and the torch.compile switch of the runner."""
import pickle

import pytest
import torch
from avalanche.core import SupervisedPlugin

from avalanche_lpa.plugins import AutocastPlugin
from avalanche_lpa.training import build_strategy

from .conftest import make_tiny


def test_bf16_switch_runs_forward_in_bf16_and_gives_float_logits(cil_benchmark):
    model = make_tiny()
    seen = []
    model.backbone.blocks[0].mlp.fc1.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    logits = []

    class Capture(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            logits.append((strategy.mb_output.dtype, strategy.loss.dtype))

    strategy = build_strategy(
        "naive", model, device="cpu", precision="bf16", train_mb_size=16, train_epochs=1, plugins=[Capture()]
    )
    assert any(isinstance(p, AutocastPlugin) for p in strategy.plugins)
    strategy.train(cil_benchmark.train_stream[0])
    assert seen and set(seen) == {torch.bfloat16}
    assert set(logits) == {(torch.float32, torch.float32)}  # the loss sees float32 logits
    seen.clear()
    strategy.eval(cil_benchmark.test_stream[:1])
    assert set(seen) == {torch.bfloat16}
    model.eval()
    assert model(torch.randn(2, 1, 8, 8)).dtype == torch.float32  # nothing left switched on after the plugin
    pickle.dumps(next(p for p in strategy.plugins if isinstance(p, AutocastPlugin)))


def test_precision_values_are_checked():
    with pytest.raises(ValueError, match="unknown precision 'int8'"):
        AutocastPlugin("int8")


def test_compile_switch_compiles_the_backbone_in_place(monkeypatch):
    from avalanche_lpa.config import load_config
    from avalanche_lpa.runner import build_model

    compiled = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__))
    config = load_config(None, ["model.preset=tiny", "model.compile=true"])
    model = build_model(config, num_classes=10)
    assert compiled == ["LocalityViTBackbone"]
    assert "backbone.pos_embed" in model.state_dict()  # keys unchanged: checkpoints stay loadable
    build_model(load_config(None, ["model.preset=tiny"]), num_classes=10)
    assert len(compiled) == 1


def test_the_shipped_configs_train_in_the_authors_precision():
    # The authors: CIFAR-100 in float32 (cifar_raw_lpa.yaml, no_amp: true), ImageNet-100 with automatic mixed
    # precision (imagenet_raw_lpa.yaml, no_amp: false): bfloat16 autocast here, no loss scaling needed.
    from avalanche_lpa.config import load_config
    from avalanche_lpa.config.shipped import config_names

    for name in config_names():  # the 224 px configs (ImageNet-R, CUB-200) are built on the ImageNet recipe
        expected = "bf16" if name.startswith(("imagenet100", "imagenet_r", "cub200")) else "fp32"
        assert load_config(name).strategy["precision"] == expected, name


class _Overflow(SupervisedPlugin):
    """Makes one gradient infinite in the backward pass of training iteration ``at`` (counted over the run)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen, self.before = at, 0, None

    def after_backward(self, strategy, **kwargs):
        if self.seen == self.at:
            self.before = {n: p.detach().clone() for n, p in strategy.model.named_parameters()}
            next(p for p in strategy.model.parameters() if p.grad is not None).grad.fill_(float("inf"))
        self.seen += 1


def test_fp16_training_scales_the_loss_skips_an_overflowed_step_and_reports_the_loss_unscaled(cil_benchmark):
    model = make_tiny()
    seen, losses = [], []
    model.backbone.blocks[0].mlp.fc1.register_forward_hook(lambda m, a, out: seen.append(out.dtype))

    class Losses(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            losses.append(float(strategy.loss))

    overflow = _Overflow(at=2)
    skipped = {}

    class AfterStep(SupervisedPlugin):
        def after_update(self, strategy, **kwargs):
            if overflow.seen == overflow.at + 1 and not skipped:
                skipped.update({n: torch.equal(p, overflow.before[n]) for n, p in strategy.model.named_parameters()})

    strategy = build_strategy("naive", model, device="cpu", precision="fp16", train_mb_size=16, train_epochs=2,
                              lr=1e-3, plugins=[overflow, Losses(), AfterStep()])
    autocast = next(p for p in strategy.plugins if isinstance(p, AutocastPlugin))
    strategy.train(cil_benchmark.train_stream[0])
    assert seen and set(seen) == {torch.float16}
    assert all(0 < loss < 10 for loss in losses)  # unscaled: cross-entropy of 2 classes, not x 65536
    assert skipped and all(skipped.values())  # the overflowed update changed no parameter
    assert autocast.scaler.get_scale() < 2.0**16  # the scale was halved after the overflow
    assert all(torch.isfinite(p).all() for p in model.parameters())
    restored = pickle.loads(pickle.dumps(autocast))  # checkpoints pickle the scaler between iterations
    assert restored.scaler.get_scale() == autocast.scaler.get_scale()


def test_precision_names_are_listed_where_a_config_enters():
    from avalanche_lpa.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"^strategy\.precision must be one of fp32, bf16, fp16, got 'fp8'$"):
        load_config(None, ["strategy.precision=fp8"])
    assert load_config(None, ["strategy.precision=fp16"]).strategy["precision"] == "fp16"
