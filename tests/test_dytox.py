"""DyTox and DyTox+LPA: task tokens, per-token heads, joint-token decoding, the divergence head and its loss."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lpa.models import DyTox
from avalanche_lpa.plugins import (
    BalancedFinetuningPlugin,
    ConcatReplayPlugin,
    DivergenceHeadPlugin,
    SeenClassesBCE,
    divergence_loss,
    divergence_targets,
    herding_memory,
    in_finetuning,
)

from .conftest import TINY

DYTOX_FROZEN = ("backbone.encoder.patch_embed", "backbone.encoder.pos_embed", "backbone.encoder.blocks",
                "divergence_head")


def make_dytox(attn_type="lpa", **overrides):
    return DyTox(**{**TINY, "attn_type": attn_type, **overrides})


def _grow(model, classes_per_experience):
    model.train()
    for classes in classes_per_experience:
        model.adaptation(SimpleNamespace(classes_in_this_experience=classes))
        model.classifier.adaptation(SimpleNamespace(classes_in_this_experience=classes))


@pytest.mark.parametrize("attn_type", ["lpa", "gpsa", "mhsa"])
def test_joint_tokens_give_the_same_logits_as_one_pass_per_token(attn_type):
    model = make_dytox(attn_type)
    _grow(model, [[0, 1], [2, 3], [4, 5]])
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    looped = model(x)
    model.backbone.joint_tokens = True
    joint = model(x)
    assert looped.shape == (4, 6)
    assert (joint - looped).abs().max() < 1e-5


def test_one_token_and_head_per_experience_and_a_fresh_divergence_head():
    model = make_dytox()
    assert model.divergence_head is None and len(model.task_tokens) == 1
    _grow(model, [[0, 1]])
    assert len(model.task_tokens) == 1 and len(model.classifier.heads) == 1 and model.divergence_head is None
    _grow(model, [[2, 3, 4]])
    first_div = model.divergence_head
    assert len(model.task_tokens) == 2 and first_div.linear.out_features == 3 + 1
    _grow(model, [[5, 6]])
    assert len(model.task_tokens) == 3 and model.divergence_head is not first_div
    assert model.divergence_head.linear.out_features == 2 + 1
    assert [t.requires_grad for t in model.task_tokens] == [False, False, True]
    assert model.task_tokens[0] is model.backbone.encoder.cls_token  # token 0 is the CLS token, as in DyTox
    # A new token is a fresh truncated-normal parameter of the first token's shape.
    assert model.task_tokens[2].shape == model.task_tokens[0].shape and model.task_tokens[2].abs().max() <= 0.04
    _grow(model, [[5, 6]])  # classes already owned: nothing grows
    assert len(model.task_tokens) == 3


def test_a_saved_dytox_reloads_into_a_fresh_model():
    model = make_dytox()
    _grow(model, [[0, 1], [2, 3], [4, 5]])
    model.eval()
    fresh = make_dytox().eval()
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(fresh(x), model(x))
    assert len(fresh.task_tokens) == 3 and fresh.divergence_head.linear.out_features == 3
    torch.testing.assert_close(fresh.divergence_logits(fresh.get_features(x)), model.divergence_logits(model.get_features(x)))


def test_divergence_targets_and_loss_hard_and_soft():
    new = [2, 3]  # classes 0, 1 are old
    labels = torch.tensor([0, 3, 1, 2])
    hard = divergence_targets(new, labels=labels)
    assert hard.tolist() == [0, 2, 0, 1]  # old -> 0, new c -> c - C_old + 1
    logits = torch.tensor([[1.0, -1.0, 0.5], [0.0, 2.0, -1.0], [0.3, 0.3, 0.3], [-2.0, 1.0, 0.0]])
    want_bce = F.binary_cross_entropy_with_logits(logits, torch.eye(3)[[0, 2, 0, 1]])
    assert divergence_loss(logits, hard, "bce").item() == pytest.approx(want_bce.item())
    assert divergence_loss(logits, hard, "ce").item() == pytest.approx(F.cross_entropy(logits, hard).item())
    # Mixup soft targets over the seen classes (columns 0..3): old mass summed into column 0.
    soft = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.0, 0.0, 0.4, 0.6], [0.25, 0.25, 0.25, 0.25], [0.0, 0.5, 0.5, 0.0]])
    targets = divergence_targets(new, soft_targets=soft, columns=torch.tensor([0, 1, 2, 3]))
    torch.testing.assert_close(targets, torch.tensor([[0.8, 0.1, 0.1], [0.0, 0.4, 0.6], [0.5, 0.25, 0.25],
                                                      [0.5, 0.5, 0.0]]))
    assert divergence_loss(logits, targets).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, targets).item())


class Probe(SupervisedPlugin):
    """Per iteration: loss before / after the divergence plugin, and which tokens / heads got gradients."""

    def __init__(self, divergence):
        super().__init__()
        self.divergence, self.rows = divergence, []

    def after_backward(self, strategy, **kwargs):
        model = strategy.model
        self.rows.append(dict(
            exp=strategy.clock.train_exp_counter, finetuning=in_finetuning(strategy),
            tokens=[t.grad is not None and bool(t.grad.abs().sum() > 0) for t in model.task_tokens],
            heads=[h.linear.weight.grad is not None and bool(h.linear.weight.grad.abs().sum() > 0)
                   for h in model.classifier.heads],
            encoder=model.backbone.encoder.blocks[0].attn.qk.weight.grad is not None,
        ))
        for p in model.parameters():
            p.grad = None


def test_dytox_trains_with_the_divergence_loss_and_the_finetuning_freeze_set(cil_benchmark):
    model = make_dytox(joint_tokens=True)
    memory = herding_memory(12)
    divergence = DivergenceHeadPlugin(weight=0.1)
    probe = Probe(divergence)
    losses = []

    class LossCheck(SupervisedPlugin):  # listed before / after the divergence plugin
        def __init__(self, key):
            super().__init__()
            self.key = key

        def before_backward(self, strategy, **kwargs):
            if self.key == "before":
                losses.append({"before": strategy.loss.item(), "finetuning": in_finetuning(strategy)})
            else:
                losses[-1]["after"] = strategy.loss.item()

    criterion = SeenClassesBCE(label_smoothing=0.1, mixup_alpha=0.8)
    strategy = Naive(
        model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3), criterion=criterion, train_mb_size=16,
        device="cpu", evaluator=EvaluationPlugin(loggers=[]),
        plugins=[ConcatReplayPlugin(memory), BalancedFinetuningPlugin(memory, epochs=1, batch_size=4, frozen=DYTOX_FROZEN),
                 LossCheck("before"), divergence, LossCheck("after"), probe],
    )
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
    train = [r for r in losses if not r["finetuning"]]
    assert all(r["after"] == r["before"] for r in train[:4])  # experience 0: no divergence head yet
    assert all(r["after"] != r["before"] for r in train[4:])  # later experiences: the loss is added
    assert all(r["after"] == r["before"] for r in losses if r["finetuning"])  # off in finetuning (mode "tr")
    third = [r for r in probe.rows if r["exp"] == 2 and not r["finetuning"]]
    assert third and all(r["tokens"] == [False, False, True] and r["heads"] == [False, False, True] for r in third)
    finetune = [r for r in probe.rows if r["exp"] == 2 and r["finetuning"]]
    assert finetune and all(all(r["tokens"]) and all(r["heads"]) and not r["encoder"] for r in finetune)


@pytest.mark.parametrize("attn_type", ["lpa", "gpsa", "mhsa"])
def test_dytox_timm_entry_points(attn_type):
    import timm

    from avalanche_lpa.models import PRESETS, dytox_model_name, presets

    for preset in PRESETS:
        name = dytox_model_name(attn_type, preset)
        assert timm.is_model(name) and getattr(presets, name).__name__ == name
    model = timm.create_model(dytox_model_name(attn_type, "tiny"), **{k: v for k, v in TINY.items() if k != "drop_path_rate"})
    assert isinstance(model, DyTox) and model.attn_type == attn_type
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 2)  # masked until a strategy adapts it
    with pytest.raises(ValueError, match="grows one head per experience"):
        timm.create_model(dytox_model_name(attn_type, "tiny"), num_classes=10)


def _dytox_config(tmp_path, name, *extra):
    from avalanche_lpa.config import load_config

    tiny = "{img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 2, num_heads: 9, drop_path_rate: 0.0}"
    return load_config(None, [
        "data.dataset=synthetic", "data.n_experiences=3", "model.preset=tiny", f"model.overrides={tiny}",
        "model.attn_type=lpa", "strategy.name=dytox", "strategy.train_epochs=1", "strategy.epochs_first=1",
        "strategy.train_mb_size=16", "strategy.lr_schedule.schedule_epochs=null", "strategy.lr_schedule.step=iteration",
        "strategy.lr_schedule.warmup_epochs=0.5", "strategy.lr=0.003", "strategy.lr_schedule.lr_first=0.003",
        "strategy.mem_size=12",
        "strategy.finetune.epochs=1", "strategy.repeated_aug=3", "evaluation.progress_bar=false",
        "evaluation.locality_probe_size=12", f"output.dir={tmp_path / name}", "seed=3", *extra,
    ])


@pytest.mark.slow
def test_dytox_runs_in_the_runner_and_resumes_identically(tmp_path):
    from avalanche_lpa.runner import RunInterrupted, run

    straight = run(_dytox_config(tmp_path, "straight"))
    assert straight["model"] == "dytox_lpa_tiny" and len(straight["accuracy_matrix"]) == 3
    assert len(straight["locality"]["layers"][-1]) == 2  # the shared encoder's local blocks are measured
    interrupted = _dytox_config(tmp_path, "resumed")
    with pytest.raises(RunInterrupted):
        run(interrupted, stop_after=2)
    resumed = run(interrupted, resume=True)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = make_dytox(joint_tokens=True)
    fresh.load_state_dict(a)  # the saved model loads into a freshly built one
    assert len(fresh.task_tokens) == 3 and len(fresh.classifier.heads) == 3


# -- DyTox as Douillard published it, beside the LPA authors' version (issue 20, point 3) --------------------
def test_the_douillard_presets_hold_his_cifar100_b0_10_config_and_dytox_stays_the_lpa_authors():
    from avalanche_lpa.training import strategy_options

    his = strategy_options("dytox_douillard")
    assert {k: his[k] for k in ("lr", "train_epochs", "epochs_first")} == dict(
        lr=2.5e-4, train_epochs=500, epochs_first=None)  # 5e-4 x 128 x 2 / 512
    assert (his["lr_schedule"]["lr_first"], his["lr_schedule"]["schedule_epochs"]) == (None, 500.0)
    assert (his["distillation"], his["finetune"]["sampling"], his["finetune"]["lr"]) == (
        dict(temperature=1.0, all_samples=True, finetuning=False), "none", 2.5e-5)
    assert (his["mixup"], his["label_smoothing"], his["loss"], his["divergence_weight"]) == (0.0, 0.0, "bce", 0.1)
    assert (his["mem_size"], his["memory_scope"], his["finetune"]["epochs"], his["repeated_aug"]) == (
        2000, "global", 20, 3)
    assert tuple(his["finetune"]["frozen"][:3]) == DYTOX_FROZEN[:3] and his["finetune"]["frozen_mode"] == "train"
    plus = strategy_options("dytox_plus_douillard")
    assert {k: v for k, v in plus.items() if his[k] != v} == {"mixup": 0.8, "label_smoothing": 0.1}
    lpa_authors = strategy_options("dytox")
    assert (lpa_authors["lr"], lpa_authors["lr_schedule"]["lr_first"], lpa_authors["train_epochs"],
            lpa_authors["epochs_first"]) == (
        4e-4, 2.5e-4, 600, 500)
    assert (lpa_authors["distillation"], lpa_authors["finetune"]["sampling"], lpa_authors["finetune"]["lr"],
            lpa_authors["mixup"]) == (dict(temperature=1.0, all_samples=False, finetuning=True), "repeated_aug", 5e-5, 0.8)


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # his reduction, as ours
def test_douillards_distillation_covers_every_sample_and_always_scales_the_classification_loss():
    from avalanche_lpa.plugins import OldSampleDistillationPlugin, old_sample_distillation

    torch.manual_seed(0)
    student, teacher = torch.randn(6, 5), torch.randn(6, 3)
    labels = torch.tensor([0, 3, 4, 3, 4, 3])  # one sample of an old class (0, 1, 2)
    tau = 2.0
    # His engine.forward: kl_div(log_softmax(s[:, :C_old] / tau), log_softmax(t / tau), "mean", log_target) * tau^2.
    his = F.kl_div(F.log_softmax(student[:, :3] / tau, 1), F.log_softmax(teacher / tau, 1), reduction="mean",
                   log_target=True) * tau**2
    ours = old_sample_distillation(student, teacher, labels, [0, 1, 2], tau, all_samples=True)
    assert torch.allclose(ours, his)
    assert not torch.allclose(old_sample_distillation(student, teacher, labels, [0, 1, 2], tau), his)

    def step(plugin, labels, finetuning=False):
        plugin.teacher, plugin.weight, plugin.old_classes = (lambda x: teacher), 0.6, {0, 1, 2}
        strategy = SimpleNamespace(mb_x=None, mb_output=student, mb_y=labels, loss=torch.tensor(1.0),
                                   _lpa_finetuning=finetuning)
        plugin.before_backward(strategy)
        return strategy.loss

    new_only = torch.tensor([3, 4, 3, 4, 3, 4])
    assert step(OldSampleDistillationPlugin(), new_only) == 1.0  # the LPA authors': no old sample, no scaling
    kd = old_sample_distillation(student, teacher, new_only, [0, 1, 2], 1.0, all_samples=True)
    assert torch.allclose(step(OldSampleDistillationPlugin(all_samples=True), new_only), 0.4 * 1.0 + 0.6 * kd)
    assert step(OldSampleDistillationPlugin(all_samples=True, finetuning=False), labels, finetuning=True) == 1.0
    assert step(OldSampleDistillationPlugin(all_samples=True), labels, finetuning=True) != 1.0


def test_douillards_finetuning_loader_reads_the_set_in_order_in_every_process():
    from torch.utils.data import TensorDataset

    from avalanche_lpa.data.sharding import shard_loader

    data = TensorDataset(torch.arange(10).float(), torch.zeros(10, dtype=torch.long))
    plugin = BalancedFinetuningPlugin(herding_memory(4), batch_size=4, sampling="none")
    loader = plugin._loader(SimpleNamespace(train_mb_size=4), data, experience=1)
    assert shard_loader(loader, rank=1, world_size=2) is loader  # not sharded: each process the whole set
    assert [x.tolist() for x, _ in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]  # dataset order, last batch dropped
    small = plugin._loader(SimpleNamespace(train_mb_size=4), TensorDataset(torch.zeros(3), torch.zeros(3)), 1)
    assert len(list(small)) == 1  # a set of at most one batch is kept (drop_last only when len > batch)
    with pytest.raises(ValueError, match="sampling must be one of repeated_aug, none"):
        BalancedFinetuningPlugin(herding_memory(4), sampling="shuffle")


def test_joint_token_drop_path_draws_per_token_as_separate_passes_would():
    from avalanche_lpa.layers.blocks import ClassAttentionBlock

    block = ClassAttentionBlock(8, num_heads=2, drop_path=0.5).train()
    torch.manual_seed(0)
    kept = block._token_drop_path(torch.ones(64, 3, 8))[..., 0] != 0  # [sample, token]
    assert kept.any() and not kept.all()
    assert (kept[:, 0] != kept[:, 1]).any()  # one sample keeps one token's path and drops another's
    single = torch.randn(16, 1, 8)
    torch.manual_seed(1)
    ours = block._token_drop_path(single)
    torch.manual_seed(1)
    assert torch.equal(ours, block.drop_path(single))  # one token: timm's per-sample drop-path, same draws


def test_douillards_dytox_trains_in_the_strategy_api(cil_benchmark):
    from avalanche_lpa.training import build_strategy

    for name in ("dytox_douillard", "dytox_plus_douillard"):
        strategy = build_strategy(name, make_dytox(joint_tokens=True), device="cpu",
                                  evaluator=EvaluationPlugin(loggers=[]), train_mb_size=16, mem_size=12,
                                  train_epochs=1, finetune={"epochs": 1}, lr_schedule={"schedule_epochs": None})
        for experience in cil_benchmark.train_stream[:2]:
            strategy.train(experience)
        assert len(strategy.model.task_tokens) == 2
