"""BalancedFinetuningPlugin: the authors' freeze set, through the strategy's own loop, everything restored."""
import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lpa.plugins import (
    BalancedFinetuningPlugin,
    ConcatReplayPlugin,
    ExperienceLRSchedulePlugin,
    OldSampleDistillationPlugin,
    SeenClassesBCE,
    balanced_indices,
    herding_memory,
    in_finetuning,
)

from .conftest import make_tiny

FROZEN = ("backbone.patch_embed", "backbone.pos_embed", "backbone.blocks", "backbone.cls_blocks")


class Probe(SupervisedPlugin):
    """Records, for every finetuning iteration, the lr, the optimizer's parameters and module modes."""

    def __init__(self):
        super().__init__()
        self.rows, self.snapshots = [], []

    def before_backward(self, strategy, **kwargs):
        if in_finetuning(strategy):
            model = strategy.model
            self.rows.append(dict(
                lr=strategy.optimizer.param_groups[0]["lr"],
                optimized={id(p) for g in strategy.optimizer.param_groups for p in g["params"]},
                blocks_train=model.backbone.blocks[0].training, cls_train=model.backbone.cls_blocks[0].training,
                head_train=model.classifier.training,
            ))

    def after_training_exp(self, strategy, **kwargs):
        self.snapshots.append({k: v.clone() for k, v in strategy.model.state_dict().items()})


def test_balanced_indices_cut_every_class_to_the_smallest():
    assert balanced_indices([0, 1, 0, 1, 0, 2, 2]) == [0, 1, 2, 3, 5, 6]
    assert balanced_indices([]) == []


@pytest.mark.parametrize("frozen_mode", [None, "train", "eval"])
def test_finetuning_freezes_the_authors_set_trains_cls_token_and_all_heads(frozen_mode, cil_benchmark):
    # Drop-path on: in training mode the frozen blocks drop paths, and their parameters must still not move.
    model = make_tiny(head_type="per_experience", drop_path_rate=0.5)
    memory = herding_memory(10)  # 10 // 4 classes = 2 per class after experience 1
    mode = {} if frozen_mode is None else {"frozen_mode": frozen_mode}  # None: the default, the authors' "train"
    finetune = BalancedFinetuningPlugin(memory, epochs=2, lr=1e-2, batch_size=4, **mode)
    before, after = Probe(), Probe()
    criterion = SeenClassesBCE(mixup_alpha=1.0)
    strategy = Naive(
        model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3), criterion=criterion,
        train_mb_size=16, train_epochs=1, device="cpu", evaluator=EvaluationPlugin(loggers=[]),
        plugins=[ExperienceLRSchedulePlugin(lr=1e-3, warmup_epochs=0), ConcatReplayPlugin(memory), before,
                 finetune, OldSampleDistillationPlugin(), after],
    )
    strategy.train(cil_benchmark.train_stream[0])
    assert finetune.iterations == 0 and not after.rows  # not after the first experience
    strategy.train(cil_benchmark.train_stream[1])
    assert len(memory.buffer) == 8 and finetune.iterations == 2 * (8 // 4) == len(after.rows)

    start, end = before.snapshots[-1], after.snapshots[-1]
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    frozen = {k for k in start if k.startswith(FROZEN)}
    assert frozen and not changed & frozen  # the frozen set did not move
    assert "backbone.cls_token" in changed
    assert any(k.startswith("classifier.heads.0.") for k in changed)  # the old head trains too
    assert any(k.startswith("classifier.heads.1.") for k in changed)

    trainable = {id(p) for n, p in model.named_parameters() if not n.startswith(FROZEN)}
    for row in after.rows:
        assert row["lr"] == 1e-2  # the experience's lr schedule is paused
        assert row["optimized"] == trainable
        frozen_train = frozen_mode != "eval"
        assert row["blocks_train"] is frozen_train and row["cls_train"] is frozen_train and row["head_train"]
    # Restored afterwards: the strategy's optimizer, every flag and mode (old head frozen again).
    assert strategy.optimizer.param_groups[0]["lr"] != 1e-2
    heads = model.classifier.heads
    assert not any(p.requires_grad for p in heads[0].parameters()) and all(p.requires_grad for p in heads[1].parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(FROZEN))
    assert not in_finetuning(strategy)


def test_finetuning_through_the_loop_mixes_and_distils(cil_benchmark):
    model = make_tiny(head_type="per_experience")
    memory = herding_memory(12)
    rows = []

    class Before(SupervisedPlugin):
        def after_forward(self, strategy, **kwargs):  # SeenClassesBCE mixed the batch in its before_forward
            if in_finetuning(strategy):
                rows.append({"mixed": strategy._criterion.pending_targets is not None})

        def before_backward(self, strategy, **kwargs):
            if in_finetuning(strategy):
                rows[-1]["loss"] = strategy.loss.item()

    class After(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            if in_finetuning(strategy):
                old = bool((strategy.mb_y < 2).any())  # classes 0, 1 are the earlier experience's
                rows[-1].update(old=old, final=strategy.loss.item())

    distill = OldSampleDistillationPlugin()
    strategy = Naive(
        model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
        criterion=SeenClassesBCE(label_smoothing=0.1, mixup_alpha=0.8), train_mb_size=16, device="cpu",
        evaluator=EvaluationPlugin(loggers=[]),
        plugins=[ConcatReplayPlugin(memory), BalancedFinetuningPlugin(memory, epochs=2, batch_size=4), Before(),
                 distill, After()],
    )
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    assert rows and all(row["mixed"] for row in rows)
    assert any(row["old"] for row in rows)
    assert all((row["final"] != row["loss"]) == row["old"] for row in rows)  # KD exactly on batches with old samples
    assert distill.teacher is None  # released once train() returned


@pytest.mark.parametrize("options, message", [
    ({"herding_layer": "backbon"}, r"herding_layer: LocalityViT has no unique submodule 'backbon'; top-level "
                                   r"modules: \['backbone', 'classifier'\]"),
    ({"finetune": {"frozen": ["backbone.blocks", "backbone.patch_embd"]}},
     r"finetune.frozen: 'backbone.patch_embd' names nothing on the model; backbone holds patch_embed, "),
])  # fmt: skip
def test_the_recipes_module_names_are_checked_when_the_strategy_is_built(options, message):
    # Before: herding failed after the first experience had trained, finetuning at the start of the second.
    from avalanche_lpa.training import build_strategy

    with pytest.raises(ValueError, match=message):
        build_strategy("lpa", make_tiny(), device="cpu", **options)


def test_a_frozen_name_of_a_module_created_later_is_accepted():
    from avalanche_lpa.models import DyTox  # noqa: F401  (the registry's dytox models)
    from avalanche_lpa.plugins import DYTOX_FINETUNE_FROZEN, frozen_parameter_names
    import timm

    model = timm.create_model("dytox_lpa_tiny", img_size=8, patch_size=2, in_chans=1, embed_dim=18, num_heads=9)
    assert model.divergence_head is None  # made at the second experience
    frozen = frozen_parameter_names(model, DYTOX_FINETUNE_FROZEN)
    assert frozen and all(name.startswith("backbone.encoder.") for name in frozen)
