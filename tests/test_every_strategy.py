"""Every strategy of ``avalanche.training`` with a tiny LPAViT, discovered from Avalanche at test time.

Like timm's tests over its model registry: the strategy classes are read from the installed avalanche-lib,
so a new release's strategy fails :func:`test_every_avalanche_strategy_has_a_build_strategy_name` until it is
given a ``build_strategy`` name or excluded below with a reason. Each one then trains one epoch per experience
of a 3-experience synthetic stream and evaluates, built by ``build_strategy``, with every head it accepts.
"""
import contextlib
import inspect
import re
import signal
from pathlib import Path

import avalanche.training
import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import JointTraining, StreamingLDA
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedMetaLearningTemplate, SupervisedTemplate

from avalanche_lpa.runner.checkpoint import load_checkpoint, save_checkpoint_atomic
from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.data import synthetic_benchmark
from avalanche_lpa.runner import build_model, evaluate_saved_run, run
from avalanche_lpa.models import DyTox, GrowingClassifier, PerExperienceHeads
from avalanche_lpa.training import (
    COMMON_OPTIONS,
    DYTOX_NAMES,
    RECIPES,
    STRATEGIES,
    MemoryGuard,
    build_strategy,
    head_requirement,
    needs_fixed_head,
    strategy_class,
    strategy_options,
)

from .conftest import make_tiny

#: Strategies that need another model family than a ViT you pass in (not an omission: each says why).
EXCLUDED = {
    "AR1": "its own MobileNetV1 with latent replay at a named layer (avalanche.models.MobilenetV1)",
    "PNNStrategy": "a progressive neural network (avalanche.models.PNN): one column per task",
    "PackNet": "a PackNetModel of prunable layers (avalanche.models.PackNetModel); exported from 0.6.0",
    "ExpertGateStrategy": "an ExpertGateModel: AlexNet experts behind autoencoder gates",
    "LearningToPrompt": "builds its own pretrained timm ViT by name with a prompt pool; takes no model",
    "GenerativeReplay": "a generative model (a VAE generator trained beside the solver)",
    "AETraining": "trains an autoencoder (generative), not a classifier",
    "VAETraining": "trains a variational autoencoder (generative), not a classifier",
}

# Small memories and batches, one inner step for MER, two BiC bias epochs: each case runs in well under 1 s.
SMALL = dict(train_mb_size=8, eval_mb_size=32, mem_size=48, patterns_per_exp=8, sample_size=8, subsample=8,
             batch_size_mem=8, stage_2_epochs=2, n_inner_steps=1, projection_dim=8, lr=3e-3)
ACCURACY = "Top1_Acc_Stream/eval_phase/test_stream/Task000"


def _discovered():
    """Strategy classes of avalanche.training built on Avalanche's supervised templates, by class name."""
    found = {}
    for name, member in inspect.getmembers(avalanche.training, inspect.isclass):
        if issubclass(member, (SupervisedTemplate, SupervisedMetaLearningTemplate)) and member not in (
            SupervisedTemplate, SupervisedMetaLearningTemplate
        ):
            found[name] = member
    return found


DISCOVERED = _discovered()


def _name_of(cls):
    """The build_strategy name of an Avalanche class (ours may subclass it: BiC), recipes last."""
    names = [n for n in STRATEGIES if issubclass(strategy_class(n), cls) and n not in RECIPES]
    return names[0] if names else None


@pytest.fixture(scope="module")
def stream():
    # 20 training images per class: a first experience of 40 fills GSS's replay batch (8 + 32).
    return synthetic_benchmark(n_experiences=3, classes_per_experience=2, img_size=8, in_chans=1,
                               train_per_class=20, test_per_class=4)


#: Smaller than conftest's tiny model (one local block, 3 heads): ~3k parameters, a strategy x head in ~0.2 s.
SMALLEST = dict(embed_dim=12, depth=1, num_heads=3, mlp_ratio=2.0)


def _model(head):
    torch.manual_seed(0)
    return make_tiny(num_classes=6, **SMALLEST) if head == "fixed" else make_tiny(head_type=head, **SMALLEST)


def _heads(name):
    """Every head the registry accepts for ``name``: both growing heads and the fixed one, or fewer."""
    requirement = head_requirement(name)
    return {"fixed": ["fixed"], "single": ["incremental", "fixed"]}.get(
        requirement, ["incremental", "per_experience", "fixed"]
    )


CASES = [(class_name, head) for class_name in sorted(n for n in DISCOVERED if n not in EXCLUDED)
         for head in (_heads(_name_of(DISCOVERED[class_name])) if _name_of(DISCOVERED[class_name]) else ["-"])]


def _build(name, model, **options):
    valid = strategy_options(name)
    small = {k: v for k, v in {**SMALL, **options}.items() if k in valid or k == "num_classes"}
    evaluator = EvaluationPlugin(accuracy_metrics(stream=True), loggers=[])
    return build_strategy(name, model, device="cpu", evaluator=evaluator, **small)


def test_discovery_finds_the_strategies_of_both_supported_avalanche_releases():
    # PackNet is exported from avalanche-lib 0.6.0 on; every other exclusion exists in 0.5.0 and 0.6.0.
    assert {"Naive", "ICaRL", "DER", "BiC", "MER", "SCR", "StreamingLDA"} <= set(DISCOVERED)
    assert set(EXCLUDED) - {"PackNet"} <= set(DISCOVERED)


def test_every_avalanche_strategy_has_a_build_strategy_name():
    missing = sorted(n for n, cls in DISCOVERED.items() if n not in EXCLUDED and _name_of(cls) is None)
    assert not missing, (
        f"avalanche.training strategies without a build_strategy name: {missing}; add them to the registry in "
        "avalanche_lpa/training/builder.py or to EXCLUDED here, with the reason"
    )
    assert not set(EXCLUDED) & {n for n, cls in DISCOVERED.items() if _name_of(cls)}  # excluded means unbuilt


@pytest.mark.parametrize("class_name, head", CASES)
def test_strategy_trains_and_evaluates_a_tiny_lpavit(class_name, head, stream):
    name = _name_of(DISCOVERED[class_name])
    assert name is not None, f"{class_name} has no build_strategy name"
    model = _model(head)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    # SLDA reads the stream's class count from num_classes; the runner passes it to every strategy.
    strategy = _build(name, model, num_classes=6)
    assert isinstance(strategy, DISCOVERED[class_name])
    if isinstance(strategy, JointTraining):  # one call on the whole stream, by design
        strategy.train(stream.train_stream)
        assert strategy.clock.train_exp_counter == 1
    else:
        for experience in stream.train_stream:
            strategy.train(experience)
        assert strategy.clock.train_exp_counter == 3
    results = strategy.eval(stream.test_stream)
    assert 0.0 <= results[ACCURACY] <= 1.0
    assert strategy.clock.train_iterations > 0
    changed = any(not torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    if isinstance(strategy, StreamingLDA):
        # No gradient step: the backbone is frozen; the class statistics hold every training image.
        assert not changed and int(strategy.cK.sum()) == 6 * 20
    else:
        assert changed, f"{name}: the backbone did not train"
    if strategy.model is model and isinstance(model.classifier, GrowingClassifier):
        assert model.classifier.active_units.tolist() == [1] * 6  # the growing head grew with the stream
    if strategy.model is model and isinstance(model.classifier, PerExperienceHeads):
        assert len(model.classifier.heads) == 3


@pytest.mark.parametrize("name", [n for n in STRATEGIES if needs_fixed_head(n)])
def test_fixed_head_strategies_refuse_a_growing_head_and_name_the_fix(name):
    for head_type in ("incremental", "per_experience"):
        with pytest.raises(ValueError, match=rf"strategy '{name}' needs a fixed classifier .*num_classes="):
            _build(name, make_tiny(head_type=head_type))


@pytest.mark.parametrize("name", [n for n in STRATEGIES if head_requirement(n) == "single"])
def test_single_head_strategies_refuse_per_experience_heads(name, stream):
    with pytest.raises(ValueError, match=rf"'{name}' needs one head over all classes .*head_type='incremental'"):
        _build(name, make_tiny(head_type="per_experience"))
    _build(name, make_tiny(num_classes=6)).train(stream.train_stream[0])  # a fixed head is one head too


def test_every_name_has_a_head_requirement_and_the_common_options():
    for name in STRATEGIES:
        assert head_requirement(name) in ("any", "fixed", "single")
        assert set(COMMON_OPTIONS) <= set(strategy_options(name))  # the common options are everyone's
    assert [n for n in STRATEGIES if needs_fixed_head(n)] == ["icarl", "der", "cope"]
    assert strategy_options("bic")["stage_2_lr"] == 0.1 and strategy_options("from_scratch")["reset_optimizer"]
    with pytest.raises(ValueError, match="valid names: naive, .*, mer"):
        needs_fixed_head("l2p")


def test_runner_gives_a_fixed_head_exactly_to_the_strategies_that_need_one(tmp_path):
    for name in STRATEGIES:
        options = ["strategy.name=" + name, "model.head=per_experience", "model.preset=tiny",
                   "data.dataset=synthetic", f"output.dir={tmp_path}"]
        model = build_model(load_config(None, options), 6)
        if needs_fixed_head(name):
            assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.out_features == 6
        elif name in DYTOX_NAMES:  # a model family of its own, with one head per task token
            assert isinstance(model, DyTox) and isinstance(model.classifier, PerExperienceHeads)
        else:
            assert isinstance(model.classifier, PerExperienceHeads)  # model.head is honoured


@contextlib.contextmanager
def _fails_after(seconds):
    """Turns a hang into a failure (SIGALRM interrupts Avalanche's endless loop between bytecodes)."""
    def fail(*args):
        raise TimeoutError(f"still running after {seconds} s: the memory guard did not stop a hang")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_gss_memory_smaller_than_its_replay_batch_is_refused_with_the_minimum(stream):
    with pytest.raises(ValueError, match=r"gss needs mem_size >= train_mb_size \+ 32 = 40 .*got mem_size=39"):
        _build("gss", make_tiny(), mem_size=39)
    strategy = _build("gss", make_tiny(), mem_size=40)  # the minimum works
    for experience in stream.train_stream:
        strategy.train(experience)
    # A first experience smaller than the replay batch: Avalanche would crash mid-batch; the guard says why.
    small = synthetic_benchmark(n_experiences=3, classes_per_experience=2, img_size=8, in_chans=1,
                                train_per_class=8, test_per_class=2)
    strategy = _build("gss", make_tiny(), mem_size=40)
    strategy.train(small.train_stream[0])
    with pytest.raises(ValueError, match="gss would fail: its memory holds 16 images, fewer than a replay batch"):
        strategy.train(small.train_stream[1])


def test_er_aml_memory_below_a_batch_per_class_is_refused_before_training_or_before_it_hangs(stream):
    with pytest.raises(ValueError, match=r"er_aml needs mem_size >= train_mb_size x classes = 48 .*got mem_size=47"):
        _build("er_aml", make_tiny(num_classes=6), mem_size=47)  # classes known from the fixed head
    with pytest.raises(ValueError, match="= 48"):
        _build("er_aml", make_tiny(), mem_size=47, num_classes=6)  # ... or given (the runner does)
    # A growing head and no class count: the guard stops the experience Avalanche would loop on forever.
    strategy = _build("er_aml", make_tiny(), mem_size=24)
    assert any(isinstance(p, MemoryGuard) for p in strategy.plugins)
    strategy.train(stream.train_stream[0])
    with _fails_after(60), pytest.raises(ValueError, match=r"er_aml would hang: .*holds 6 images of a class.* >= 32"):
        strategy.train(stream.train_stream[1])


def test_feature_replay_memory_below_its_replay_batch_is_refused(stream):
    with pytest.raises(ValueError, match=r"feature_replay needs mem_size >= batch_size_mem = 8 .*got mem_size=7"):
        _build("feature_replay", make_tiny(), mem_size=7)
    strategy = _build("feature_replay", make_tiny(), mem_size=8)
    for experience in stream.train_stream:
        strategy.train(experience)


def test_under_torchrun_feature_replay_memory_must_hold_one_global_memory_batch(stream, monkeypatch):
    """Two processes' memory batches together are one global memory batch (DistributedPlugin): the memory must
    hold batch_size_mem x 2, before training (mem_size) and before each experience (what the memory holds)."""
    from avalanche.distributed import DistributedHelper
    strategy = _build("feature_replay", make_tiny(), mem_size=12)
    strategy.train(stream.train_stream[0])
    monkeypatch.setattr(type(DistributedHelper), "world_size", property(lambda self: 2))
    with pytest.raises(ValueError, match=r"needs mem_size >= batch_size_mem x 2 processes = 16 .*got mem_size=12"):
        _build("feature_replay", make_tiny(), mem_size=12)
    with pytest.raises(ValueError, match=r"holds 12 features, fewer than batch_size_mem x 2 processes = 16; use "):
        strategy.train(stream.train_stream[1])


def test_strategies_with_their_own_loss_refuse_ours():
    for name in ("icarl", "scr", "slda", "feature_replay", "cope"):
        model = make_tiny(num_classes=6)
        with pytest.raises(ValueError, match=f"{name} uses .*; leave loss, label_smoothing"):
            build_strategy(name, model, device="cpu", num_classes=6, label_smoothing=0.1)
    with pytest.raises(ValueError, match="slda trains no weights"):
        build_strategy("slda", make_tiny(), device="cpu", num_classes=6, lr_schedule=True)
    with pytest.raises(ValueError, match=r"'slda' needs the number of classes .*num_classes="):
        build_strategy("slda", make_tiny(), device="cpu")


#: Options that keep each runner test small (SLDA has no memory). Each takes the model apart differently:
#: wrapped parts (iCaRL, SCR), the head taken off (FeatureReplay), the backbone alone (SLDA), the head wrapped
#: (CoPE); the runner puts the trained parts back into the model it saves.
RUNNER = {"scr": ["strategy.mem_size=32", "strategy.batch_size_mem=16", "strategy.projection_dim=8"],
          "feature_replay": ["strategy.mem_size=32"], "slda": [], "icarl": ["strategy.mem_size=32"],
          "cope": ["strategy.mem_size=32"]}


@pytest.mark.parametrize("name", sorted(RUNNER))
def test_runner_trains_strategies_that_take_the_model_apart_and_saves_a_loadable_model(name, tmp_path):
    config = load_config(None, [
        "data.dataset=synthetic", "data.n_experiences=2", "model.preset=tiny",
        "model.overrides={img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 2, num_heads: 9}",
        f"strategy.name={name}", "strategy.train_mb_size=16", *RUNNER[name], "evaluation.progress_bar=false",
        "evaluation.text_log=false", "evaluation.locality_probe_size=8", "output.plots=false",
        f"output.dir={tmp_path / name}",
    ])
    results = run(config)
    assert len(results["accuracy_matrix"]) == 2 and results["summary"]["last_accuracy"] >= 0.0
    fresh = build_model(config, 4)
    state = torch.load(tmp_path / name / "model.pt", weights_only=True)
    fresh.load_state_dict(state)  # strict: our model's layout, whatever the strategy wrapped it in
    if name == "feature_replay":  # the head it took off and trained comes back, grown to both experiences
        assert state["classifier.active_units"].tolist() == [1] * 4
    again = evaluate_saved_run(tmp_path / name)
    assert any(k.startswith("Top1_Acc_Stream") for k in again["metrics"])


def test_runner_refuses_joint_training_and_names_the_joint_control(tmp_path):
    config = load_config(None, ["data.dataset=synthetic", "strategy.name=joint", f"output.dir={tmp_path}"])
    with pytest.raises(ConfigError, match="strategy 'joint' trains once on the whole stream.*n_experiences: 1"):
        run(config)


@pytest.mark.parametrize("name", ["agem", "mir", "er_aml", "feature_replay"])
def test_strategies_keeping_memory_generators_checkpoint_and_resume(name, stream, tmp_path):
    path = tmp_path / "checkpoint.pkl"
    strategy = _build(name, make_tiny())
    strategy.train(stream.train_stream[0])
    save_checkpoint_atomic(strategy, path)
    resumed, next_experience = load_checkpoint(_build(name, make_tiny()), path)
    assert next_experience == 1
    resumed.train(stream.train_stream[1])  # the restarted memory generators yield replay batches
    assert resumed.clock.train_exp_counter == 2


def test_a_generator_that_cannot_be_restarted_is_a_clear_checkpoint_error(tmp_path):
    strategy = _build("naive", make_tiny())
    strategy.model.some_generator = (i for i in range(3))
    with pytest.raises(Exception, match="cannot checkpoint the generator .*genexpr"):
        save_checkpoint_atomic(strategy, tmp_path / "checkpoint.pkl")
    assert not (tmp_path / "checkpoint.pkl").exists()


def test_docs_strategies_table_lists_every_name_and_every_avalanche_strategy():
    page = (Path(__file__).resolve().parents[1] / "docs" / "recipe.md").read_text()
    section = page.split("## Strategies", 1)[1].split("\n\n| Avalanche strategy |", 1)[1].split("\n\n", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.splitlines()[2:]]
    assert {row[1].strip("`") for row in rows if row[1] != "—"} == set(STRATEGIES)
    listed = set(re.findall(r"`(\w+)`", " ".join(row[0] for row in rows)))
    assert set(DISCOVERED) <= listed, f"missing from the table of docs/recipe.md: {sorted(set(DISCOVERED) - listed)}"
    for row in rows:  # the head column agrees with the registry
        name = row[1].strip("`")
        if name in STRATEGIES and needs_fixed_head(name):
            assert row[2].startswith("fixed"), row
