"""build_strategy, the optimizer helper and the augmentation transforms."""
import copy

import avalanche
import pytest
import torch
from packaging.version import Version
from avalanche.training import DER, EWC, GEM, ER_ACE, ICaRL, LwF, Naive, Replay
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin, LwFPlugin, ReplayPlugin
from PIL import Image

from avalanche_lpa.runner.checkpoint import load_checkpoint, save_checkpoint_atomic
from avalanche_lpa.layers import LPAttention
from avalanche_lpa.plugins import (
    BalancedFinetuningPlugin,
    ConcatReplayPlugin,
    ExperienceEpochsPlugin,
    ExperienceLRSchedulePlugin,
    HerdingMemory,
    LPAWarmupPlugin,
    OldSampleDistillationPlugin,
    RepeatedAugmentationPlugin,
    SeenClassesBCE,
    WeightDecayGroupsPlugin,
    WeightedLwFPlugin,
)
from avalanche_lpa.data import eval_transform, train_transform
from avalanche_lpa.training import (
    STRATEGIES,
    build_optimizer,
    build_strategy,
    multiple_param_groups_supported,
    strategy_class,
    strategy_options,
)

from .conftest import make_tiny

CLASSES = {"naive": Naive, "replay": Replay, "lwf": LwF, "icarl": ICaRL, "der": DER, "ewc": EWC, "gem": GEM,
           "er_ace": ER_ACE, "lpa": Naive, "lpa_warmup": Naive}
# Small memories and a one-epoch, one-finetuning-epoch "lpa" so every name runs in well under a second.
SMALL = {"mem_size": 12, "patterns_per_exp": 8, "train_epochs": 1, "epochs_first": None, "finetune": {"epochs": 1},
         "repeated_aug": 1}


def _build(name, model, evaluator=None, **options):
    valid = strategy_options(name)
    small = {k: v for k, v in SMALL.items() if k in valid}
    if valid["lr_schedule"]:  # the preset's cosine over the experience's epochs, not 600
        small["lr_schedule"] = {"schedule_epochs": None}
    return build_strategy(name, model, evaluator=evaluator or EvaluationPlugin(loggers=[]), device="cpu",
                          train_mb_size=16, **{**small, **options})


def test_the_original_names_keep_their_classes():
    assert set(CLASSES) <= set(STRATEGIES)  # every name is run in tests/test_every_strategy.py
    # Avalanche's classes (EWC and ER-ACE: our subclasses, which take their importances / class mask at the global
    # batch under torchrun)
    ours = ("ewc", "er_ace")
    assert all(strategy_class(name) is cls for name, cls in CLASSES.items() if name not in ours)
    assert all(issubclass(strategy_class(n), CLASSES[n]) and strategy_class(n) is not CLASSES[n] for n in ours)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_strategy_builds_and_runs_one_experience(name, cil_benchmark):
    model = make_tiny(num_classes=6 if name in ("icarl", "der") else None)
    strategy = _build(name, model, evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]))
    assert type(strategy) is strategy_class(name) and isinstance(strategy, CLASSES[name])
    strategy.train(cil_benchmark.train_stream[0])
    results = strategy.eval(cil_benchmark.test_stream[:1])
    accuracy = next(v for k, v in results.items() if k.startswith("Top1_Acc_Stream/eval_phase/test_stream"))
    assert 0.0 <= accuracy <= 1.0
    assert strategy.clock.train_exp_counter == 1 and strategy.clock.train_iterations == 4


# The authors' recipe (lpa-method.md, read from their main.py / cifar_raw_lpa.yaml), independent of our preset.
AUTHORS = dict(lr=4e-4, weight_decay=1e-6, train_mb_size=256, train_epochs=600, epochs_first=500,
               lr_schedule=dict(lr_first=2.5e-4, schedule_epochs=600, warmup_epochs=5, warmup_start_lr=1e-6,
                                min_lr=1e-5, step="epoch", reset_optimizer_state=True),
               mem_size=2000, mixup=0.8, cutmix=0.0, label_smoothing=0.1, loss="bce",
               finetune=dict(epochs=20, lr=5e-5, weight_decay=1e-6, frozen=["backbone.patch_embed", "backbone.pos_embed",
                                                                     "backbone.blocks", "backbone.cls_blocks"],
                             frozen_mode="train", sampling="repeated_aug"), repeated_aug=3,
               replay_mode="concat", distillation=dict(temperature=1.0, all_samples=False, finetuning=True),
               weighted_lwf=False, lpa_warmup=False)


def test_lpa_preset_is_the_authors_recipe_and_lpa_warmup_only_adds_the_warmup():
    options = strategy_options("lpa")
    assert {k: options[k] for k in AUTHORS} == AUTHORS
    assert tuple(options["finetune"]["frozen"]) == ("backbone.patch_embed", "backbone.pos_embed", "backbone.blocks",
                                                 "backbone.cls_blocks")
    warm = strategy_options("lpa_warmup")
    assert {k for k in options if options[k] != warm[k]} == {"lpa_warmup"}
    assert warm["lpa_warmup"] == dict(start_factor=0.0, epochs=1.0, iterations=None, schedule="linear",
                                      skip_first_experience=False)  # LPAWarmupPlugin's defaults
    strategy = build_strategy("lpa", make_tiny(head_type="per_experience"), device="cpu",
                              evaluator=EvaluationPlugin(loggers=[]))
    kinds = [type(p) for p in strategy.plugins]
    order = [ExperienceEpochsPlugin, ExperienceLRSchedulePlugin, RepeatedAugmentationPlugin, ConcatReplayPlugin,
             BalancedFinetuningPlugin, OldSampleDistillationPlugin]
    assert [k for k in kinds if k in order] == order and LPAWarmupPlugin not in kinds
    schedule = next(p for p in strategy.plugins if isinstance(p, ExperienceLRSchedulePlugin))
    assert (schedule.step, schedule.schedule_epochs, schedule.reset_optimizer_state) == ("epoch", 600, True)
    replay = next(p for p in strategy.plugins if isinstance(p, ConcatReplayPlugin))
    finetune = next(p for p in strategy.plugins if isinstance(p, BalancedFinetuningPlugin))
    assert isinstance(replay.storage_policy, HerdingMemory) and finetune.storage_policy is replay.storage_policy
    assert (finetune.repeats, finetune.batch_size, finetune.weight_decay) == (3, 256, 1e-6)
    assert isinstance(strategy._criterion, SeenClassesBCE) and strategy._criterion.mixup is not None
    assert any(isinstance(p, LPAWarmupPlugin) for p in build_strategy("lpa_warmup", make_tiny(), device="cpu").plugins)
    # Options switch recipe parts off, and the recipe switches work on baselines too.
    lean = build_strategy("lpa", make_tiny(), device="cpu", distillation=False, finetune=False, lpa_warmup=False,
                          mixup=0.0, loss="ce", lr_schedule=False, epochs_first=None, repeated_aug=1)
    assert not any(isinstance(p, (OldSampleDistillationPlugin, LwFPlugin, BalancedFinetuningPlugin, LPAWarmupPlugin,
                                  ExperienceEpochsPlugin, ExperienceLRSchedulePlugin, RepeatedAugmentationPlugin))
                   for p in lean.plugins)
    balanced = build_strategy("lpa", make_tiny(), device="cpu", replay_mode="balanced_batches", repeated_aug=1,
                              weighted_lwf=True)  # the preset's distillation goes with it
    assert any(isinstance(p, ReplayPlugin) for p in balanced.plugins)
    assert any(isinstance(p, WeightedLwFPlugin) for p in balanced.plugins)
    assert not any(isinstance(p, OldSampleDistillationPlugin) for p in balanced.plugins)
    lwf = build_strategy("lwf", make_tiny(), device="cpu", lpa_warmup=True, lr_schedule=True, loss="bce")
    assert any(isinstance(p, LPAWarmupPlugin) for p in lwf.plugins)
    assert isinstance(lwf._criterion, SeenClassesBCE)


def test_unknown_names_keys_and_bad_combinations_are_explained():
    model = make_tiny()
    with pytest.raises(ValueError, match="valid names: naive, replay, lwf, icarl, der, ewc, gem, er_ace, lpa, lpa_warmup"):
        build_strategy("l2p", model)
    with pytest.raises(ValueError,
                       match=r"the DyTox strategies \(dytox, dytox_douillard, dytox_plus_douillard\) need a DyTox model"):
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
    with pytest.raises(ValueError, match=r"lr_first is now lr_schedule=\{'lr_first': \.\.\.\}"):
        build_strategy("naive", model, lr_first=1e-4)
    with pytest.raises(ValueError, match=r"unknown key\(s\) warmup in 'lr_schedule' \(ExperienceLRSchedulePlugin's "
                                         r"arguments\); valid keys: lr_first, warmup_epochs"):
        build_strategy("naive", model, lr_schedule={"warmup": 1})
    with pytest.raises(ValueError, match="lpa_warmup: expected false, true or a mapping of LPAWarmupPlugin's"):
        build_strategy("naive", model, lpa_warmup="on")
    with pytest.raises(ValueError, match="adamw, sgd"):
        build_strategy("naive", model, optimizer="lamb")
    with pytest.raises(ValueError, match="distillation and weighted_lwf are two distillations of one model; set one"):
        build_strategy("lpa", model, distillation=True, weighted_lwf=True)  # both asked for explicitly
    with pytest.raises(ValueError, match=r"distillation: expected false, true or a mapping of OldSampleDistillationPl"
                                         r".*got 'old_samples' \(old_samples is true, all_samples is"):
        build_strategy("lpa", model, distillation="old_samples")
    with pytest.raises(ValueError, match="replay_mode='concat'"):  # repeated augmentation asked for explicitly
        build_strategy("lpa", model, replay_mode="balanced_batches", repeated_aug=3)
    with pytest.raises(ValueError, match="lr_schedule.step must be one of iteration, epoch, got 'batch'"):
        build_strategy("naive", model, lr_schedule={"step": "batch"})


def test_lpa_recipe_trains_checkpoints_and_resumes(cil_benchmark, tmp_path):
    config = dict(mem_size=12, train_epochs=2, epochs_first=1, lr_schedule={"warmup_epochs": 1},
                  lpa_warmup={"epochs": 1}, finetune={"epochs": 1, "frozen": ["backbone.blocks"]})  # a list, as YAML gives it
    strategy = _build("lpa_warmup", make_tiny(head_type="per_experience"), **config)
    strategy.train(cil_benchmark.train_stream[0])
    assert strategy.clock.train_iterations == 4  # epochs_first=1
    path = tmp_path / "ckpt.pkl"
    save_checkpoint_atomic(strategy, path)  # the experiment layer's wrapper of Avalanche's dill checkpoint

    resumed, next_exp = load_checkpoint(_build("lpa_warmup", make_tiny(head_type="per_experience"), **config), path)
    assert next_exp == 1
    distill = next(p for p in resumed.plugins if isinstance(p, OldSampleDistillationPlugin))
    resumed.train(cil_benchmark.train_stream[1])
    assert distill.lambdas == pytest.approx({0: 0.0, 1: 0.5})
    replay = next(p for p in resumed.plugins if isinstance(p, ConcatReplayPlugin))
    assert len(replay.storage_policy.buffer) == 12 and len(resumed.model.classifier.heads) == 2
    assert not any(m._forward_hooks for m in resumed.model.modules())
    assert {float(m.content_factor) for m in resumed.model.modules() if isinstance(m, LPAttention)} == {1.0}
    copy.deepcopy(resumed.plugins)  # the recipe's plugins stay copyable


def test_build_optimizer_param_groups_and_growing_head(cil_benchmark):
    model = make_tiny()
    optimizer = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, param_groups=True)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in optimizer.param_groups}
    assert {"backbone.pos_embed", "backbone.cls_token"} <= decay[0.0]
    shapes = dict(model.named_parameters())
    assert all(shapes[n].ndim >= 2 for n in decay[0.05]) and "classifier.classifier.weight" in decay[0.05]
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
    # Per-experience heads add LayerNorm + Linear modules: their 1-D parameters join the no-decay group.
    heads = make_tiny(head_type="per_experience")
    strategy = _build("naive", heads, weight_decay=0.05)
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    names = {id(p): n for n, p in heads.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in strategy.optimizer.param_groups}
    if multiple_param_groups_supported():
        assert any(isinstance(p, WeightDecayGroupsPlugin) for p in strategy.plugins)
        assert {"classifier.heads.1.norm.weight", "classifier.heads.1.linear.bias"} <= groups[0.0]
        assert "classifier.heads.1.linear.weight" in groups[0.05]
    assert set().union(*groups.values()) == set(names.values())
    # The optimizer argument takes a name (YAML) or an instance.
    assert isinstance(_build("naive", make_tiny(), optimizer="sgd").optimizer, torch.optim.SGD)
    mine = torch.optim.Adam(model.parameters())
    assert _build("naive", model, optimizer=mine).optimizer is mine


def test_augmentation_transforms():
    image = Image.new("RGB", (32, 32), color=(255, 0, 0))
    torch.manual_seed(0)
    out = train_transform(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(image)
    assert out.shape == (3, 32, 32) and out.min() >= -1.0 and out.max() <= 1.0
    steps = [type(t).__name__ for t in train_transform(32, mean=(0.5,) * 3, std=(0.5,) * 3).transforms]
    # timm's factory as the authors call it, with their crop for 32 px images (timm 1.0 names it MaybeToTensor).
    assert steps[:3] == ["RandomCrop", "RandomHorizontalFlip", "RandAugment"] and steps[-1] == "Normalize"
    assert "ToTensor" in steps[3]
    policy = train_transform(32).transforms[2]
    assert len(policy.ops) == 15 and policy.num_layers == 2 and {op.magnitude for op in policy.ops} == {9}
    plain = [type(t).__name__ for t in train_transform(28, padding=2, auto_augment=None).transforms]
    assert plain == ["RandomCrop", "RandomHorizontalFlip", "ToTensor"]
    big = [type(t).__name__ for t in eval_transform(crop_size=224).transforms]
    assert big == ["Resize", "CenterCrop", "ToTensor"]
    plain = eval_transform((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(image)
    torch.testing.assert_close(plain[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    # without mean and std neither transform normalises: a model trains and is tested on the same scale
    assert type(train_transform(32).transforms[-1]).__name__ != "Normalize"
    assert 0.0 <= train_transform(32)(image).min() and train_transform(32)(image).max() <= 1.0
    torch.testing.assert_close(eval_transform()(image)[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


# -- presets compose (issue 20, point 4) ---------------------------------------------------------------------
def _preset_cases():
    from avalanche_lpa.training import PRESET_SWITCHES, RECIPES

    for name in RECIPES:
        valid = strategy_options(name)
        for key, value in PRESET_SWITCHES:
            if key in valid:
                yield pytest.param(name, key, value, id=f"{name}-{key}={value}")


def _preset_model(name):
    from avalanche_lpa.training import DYTOX_NAMES

    from .test_dytox import make_dytox

    return make_dytox(joint_tokens=True) if name in DYTOX_NAMES else make_tiny(head_type="per_experience")


@pytest.mark.parametrize("name,key,value", list(_preset_cases()))
def test_every_documented_switch_of_every_preset_builds_and_trains(name, key, value, cil_benchmark):
    small = dict(mem_size=12, train_epochs=1, epochs_first=None, finetune={"epochs": 1},
                 lr_schedule={"schedule_epochs": None})
    options = {**small, key: value}
    if key in small and isinstance(value, dict):  # a plugin section: the switch merges into the small one
        options[key] = {**small[key], **value}
    strategy = build_strategy(name, _preset_model(name), evaluator=EvaluationPlugin(loggers=[]), device="cpu",
                              train_mb_size=16, **options)
    for experience in cil_benchmark.train_stream[:2]:  # the second one distils and finetunes
        strategy.train(experience)
    assert strategy.clock.train_exp_counter == 2


def test_switching_a_part_of_a_preset_off_switches_off_its_dependent_defaults():
    model = make_tiny(head_type="per_experience")
    strategy = build_strategy("lpa", model, lr_schedule=False, device="cpu")  # the preset's lr_first goes with it
    assert not any(isinstance(p, ExperienceLRSchedulePlugin) for p in strategy.plugins)
    assert strategy.optimizer.param_groups[0]["lr"] == strategy_options("lpa")["lr"]
    assert strategy_options("lpa", {"lr_schedule": False})["lr_schedule"] is False  # lr_first lives inside it
    assert strategy_options("lpa", {"loss": "ce"})["mixup"] == 0.0
    assert strategy_options("dytox_plus_douillard", {"replay_mode": "balanced_batches"})["repeated_aug"] == 1
    assert strategy_options("lpa", {"lr_schedule": True})["lr_schedule"]["lr_first"] == 2.5e-4  # on: the preset's
    # A mapping merges into the preset's: the other arguments keep the preset's values, not the plugin's defaults.
    merged = strategy_options("lpa", {"lr_schedule": {"min_lr": 0.0}})["lr_schedule"]
    assert merged == {**strategy_options("lpa")["lr_schedule"], "min_lr": 0.0} and merged["step"] == "epoch"
    # The flat spelling of earlier versions is refused with where the option lives now.
    with pytest.raises(ValueError, match=r"lr_first is now lr_schedule=\{'lr_first': \.\.\.\}"):
        build_strategy("lpa", model, lr_schedule=False, lr_first=1e-4, device="cpu")
    with pytest.raises(ValueError, match="mixup / cutmix need loss='bce'"):
        build_strategy("lpa", model, loss="ce", mixup=0.8, device="cpu")


def test_a_yaml_preset_composes_like_the_api():
    from avalanche_lpa.config import load_config

    config = load_config(None, ["strategy.name=lpa", "strategy.lr_schedule=false", "strategy.loss=ce"])
    assert config.strategy["lr_schedule"] is False and config.strategy["mixup"] == 0.0
    assert load_config(None, ["strategy.name=lpa"]).strategy["lr_schedule"]["lr_first"] == 2.5e-4
    config = load_config(None, ["strategy.name=lpa", "strategy.lr_schedule.min_lr=0"])  # --set into the section
    assert config.strategy["lr_schedule"] == {**strategy_options("lpa")["lr_schedule"], "min_lr": 0.0}
