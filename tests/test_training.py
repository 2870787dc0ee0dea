"""build_strategy, the optimizer helper and the augmentation transforms."""
import copy

import avalanche
import pytest
import torch
from packaging.version import Version
from avalanche.training import DER, EWC, GEM, ER_ACE, ICaRL, LwF, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin, LwFPlugin, ReplayPlugin
from avalanche.training.storage_policy import ParametricBuffer
from PIL import Image

from avalanche_lpa.experiment.checkpoint import load_checkpoint, save_checkpoint_atomic
from avalanche_lpa.layers import LPAttention
from avalanche_lpa.plugins import (
    BalancedFinetuningPlugin,
    ExperienceEpochsPlugin,
    ExperienceLRSchedulePlugin,
    LPAWarmupPlugin,
    ScopedHerdingSelection,
    SeenClassesBCE,
    WeightedLwFPlugin,
)
from avalanche_lpa.training import (
    STRATEGIES,
    build_optimizer,
    build_strategy,
    eval_transform,
    multiple_param_groups_supported,
    strategy_options,
    train_transform,
)

from .conftest import make_tiny

CLASSES = {"naive": Naive, "replay": Replay, "lwf": LwF, "icarl": ICaRL, "der": DER, "ewc": EWC, "gem": GEM,
           "er_ace": ER_ACE, "lpa": Naive}
# Small memories and a one-epoch, one-finetuning-epoch "lpa" so every name runs in well under a second.
SMALL = {"mem_size": 12, "patterns_per_exp": 8, "train_epochs": 1, "epochs_first": None, "finetune_epochs": 1}


def _build(name, model, **options):
    valid = strategy_options(name)
    small = {k: v for k, v in SMALL.items() if k in valid}
    return build_strategy(name, model, evaluator=EvaluationPlugin(loggers=[]), device="cpu", train_mb_size=16,
                          **{**small, **options})


def test_names_are_the_documented_ones():
    assert set(STRATEGIES) == set(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_strategy_builds_and_runs_one_experience(name, cil_benchmark):
    model = make_tiny(num_classes=6 if name in ("icarl", "der") else None)
    strategy = _build(name, model)
    assert type(strategy) is CLASSES[name]
    strategy.train(cil_benchmark.train_stream[0])
    results = strategy.eval(cil_benchmark.test_stream[:1])
    assert isinstance(results, dict)
    assert strategy.clock.train_exp_counter == 1 and strategy.clock.train_iterations == 4


def test_lpa_recipe_composition_and_paper_defaults():
    options = strategy_options("lpa")
    assert (options["lr"], options["lr_first"], options["weight_decay"]) == (4e-4, 2.5e-4, 1e-6)
    assert (options["mem_size"], options["temperature"], options["mixup"], options["label_smoothing"]) == (
        2000, 1.0, 0.8, 0.1)
    assert (options["train_epochs"], options["epochs_first"], options["finetune_epochs"]) == (600, 500, 20)
    strategy = build_strategy("lpa", make_tiny(), device="cpu", evaluator=EvaluationPlugin(loggers=[]))
    kinds = [type(p) for p in strategy.plugins]
    order = [ExperienceEpochsPlugin, ExperienceLRSchedulePlugin, LPAWarmupPlugin, ReplayPlugin,
             BalancedFinetuningPlugin, WeightedLwFPlugin]
    assert [k for k in kinds if k in order] == order
    replay = next(p for p in strategy.plugins if isinstance(p, ReplayPlugin))
    assert isinstance(replay.storage_policy, ParametricBuffer) and replay.storage_policy.groupby == "class"
    assert isinstance(replay.storage_policy.selection_strategy, ScopedHerdingSelection)
    assert isinstance(strategy._criterion, SeenClassesBCE) and strategy._criterion.mixup is not None
    # Options switch recipe parts off, and the recipe switches work on baselines too.
    lean = build_strategy("lpa", make_tiny(), device="cpu", distillation=False, finetune_epochs=0, lpa_warmup=False,
                          mixup=0.0, loss="ce", lr_schedule=False, lr_first=None, epochs_first=None)
    assert not any(isinstance(p, (LwFPlugin, BalancedFinetuningPlugin, LPAWarmupPlugin, ExperienceEpochsPlugin,
                                  ExperienceLRSchedulePlugin)) for p in lean.plugins)
    lwf = build_strategy("lwf", make_tiny(), device="cpu", lpa_warmup=True, lr_schedule=True, loss="bce")
    assert any(isinstance(p, LPAWarmupPlugin) for p in lwf.plugins)
    assert isinstance(lwf._criterion, SeenClassesBCE)


def test_unknown_names_keys_and_bad_combinations_are_explained():
    model = make_tiny()
    with pytest.raises(ValueError, match="valid names: naive, replay, lwf, icarl, der, ewc, gem, er_ace, lpa"):
        build_strategy("dytox", model)
    with pytest.raises(ValueError, match=r"unknown option\(s\) memsize.*valid options: .*mem_size"):
        build_strategy("replay", model, memsize=10)
    with pytest.raises(ValueError, match="ewc_lambda"):  # names another strategy's option: still unknown
        build_strategy("naive", model, ewc_lambda=1.0)
    with pytest.raises(ValueError, match="loss='bce'"):
        build_strategy("naive", model, mixup=0.8)
    with pytest.raises(ValueError, match="'ce' or 'bce'"):
        build_strategy("naive", model, loss="focal")
    for name in ("der", "icarl"):
        with pytest.raises(ValueError, match="num_classes"):
            build_strategy(name, make_tiny(), device="cpu")
    with pytest.raises(ValueError, match="own BCE loss"):
        build_strategy("icarl", make_tiny(num_classes=6), device="cpu", label_smoothing=0.1)
    with pytest.raises(ValueError, match="lr_schedule=True"):
        build_strategy("naive", model, lr_first=1e-4)
    with pytest.raises(ValueError, match="adamw, sgd"):
        build_strategy("naive", model, optimizer="lamb")


def test_lpa_recipe_trains_checkpoints_and_resumes(cil_benchmark, tmp_path):
    config = dict(mem_size=12, train_epochs=2, epochs_first=1, finetune_epochs=1, warmup_epochs=1,
                  lpa_warmup_epochs=1, finetune_trainable=["head"])  # a list, as YAML gives it
    strategy = _build("lpa", make_tiny(), **config)
    strategy.train(cil_benchmark.train_stream[0])
    assert strategy.clock.train_iterations == 4  # epochs_first=1
    path = tmp_path / "ckpt.pkl"
    save_checkpoint_atomic(strategy, path)  # the experiment layer's wrapper of Avalanche's dill checkpoint

    resumed, next_exp = load_checkpoint(_build("lpa", make_tiny(), **config), path)
    assert next_exp == 1
    lwf = next(p for p in resumed.plugins if isinstance(p, WeightedLwFPlugin))
    resumed.train(cil_benchmark.train_stream[1])
    assert lwf.lambdas == pytest.approx({0: 0.0, 1: 0.5})
    replay = next(p for p in resumed.plugins if isinstance(p, ReplayPlugin))
    assert len(replay.storage_policy.buffer) == 12
    assert not any(m._forward_hooks for m in resumed.model.modules())
    assert {float(m.warmup_factor) for m in resumed.model.modules() if isinstance(m, LPAttention)} == {1.0}
    copy.deepcopy(resumed.plugins)  # the recipe's plugins (with LwF's teacher) stay copyable


def test_build_optimizer_param_groups_and_growing_head(cil_benchmark):
    model = make_tiny()
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, param_groups=True)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in optimizer.param_groups}
    assert {"backbone.pos_embed", "backbone.cls_token"} <= decay[0.0]
    shapes = dict(model.named_parameters())
    assert all(shapes[n].ndim >= 2 for n in decay[0.05]) and "head.classifier.weight" in decay[0.05]
    assert all(shapes[n].ndim == 1 for n in decay[0.0] - {"backbone.pos_embed", "backbone.cls_token"})
    assert len(build_optimizer(model, "sgd", weight_decay=0.05, param_groups=False).param_groups) == 1
    assert multiple_param_groups_supported() == (Version(avalanche.__version__) >= Version("0.6"))
    # By default two groups where Avalanche keeps them (0.6, also while the head grows), one on 0.5.
    strategy = _build("naive", model, weight_decay=0.05)
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    optimised = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
    assert len(strategy.optimizer.param_groups) == (2 if multiple_param_groups_supported() else 1)
    assert optimised == {id(p) for p in model.parameters()}
    # The optimizer argument takes a name (YAML) or an instance.
    assert isinstance(_build("naive", make_tiny(), optimizer="sgd").optimizer, torch.optim.SGD)
    mine = torch.optim.Adam(model.parameters())
    assert _build("naive", model, optimizer=mine).optimizer is mine


def test_augmentation_transforms():
    image = Image.new("RGB", (32, 32), color=(255, 0, 0))
    torch.manual_seed(0)
    out = train_transform(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(image)
    assert out.shape == (3, 32, 32) and out.min() >= -1.0 and out.max() <= 1.0
    steps = [type(t).__name__ for t in train_transform(32).transforms]
    assert steps == ["RandomCrop", "RandomHorizontalFlip", "RandAugment", "ToTensor"]
    plain = eval_transform((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(image)
    torch.testing.assert_close(plain[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
