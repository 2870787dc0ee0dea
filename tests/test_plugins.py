"""The recipe plugins: LPA warm-up, per-experience lr schedule, weighted LwF, herding order, BCE / mixup."""
import copy
import math
import pickle
import warnings
from collections import Counter, OrderedDict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin, ReplayPlugin
from avalanche.training.storage_policy import HerdingSelectionStrategy
from timm.data.mixup import mixup_target
from torch import nn

from avalanche_lpa.data import TargetTensorDataset
from avalanche_lpa.layers import LPAttention
from avalanche_lpa.plugins import (
    ExperienceEpochsPlugin,
    ExperienceLRSchedulePlugin,
    LPAWarmupPlugin,
    OldSampleDistillationPlugin,
    ScopedHerdingSelection,
    SeenClassesBCE,
    WeightedLwFPlugin,
    distillation_weight,
    herding_buffer,
    content_warmup,
)
from avalanche_lpa.training import build_optimizer

from .conftest import make_tiny

# 32 training images per class, 2 classes per experience, batch 16: 4 iterations per epoch.
BATCH = 16


def _naive(model, plugins, criterion=None, epochs=1, optimizer=None, **kwargs):
    return Naive(
        model=model,
        optimizer=optimizer or torch.optim.Adam(model.parameters(), lr=1e-3),
        criterion=criterion or nn.CrossEntropyLoss(),
        train_mb_size=BATCH,
        train_epochs=epochs,
        eval_mb_size=64,
        device="cpu",
        plugins=plugins,
        evaluator=EvaluationPlugin(loggers=[]),
        **kwargs,
    )


class Recorder(SupervisedPlugin):
    """Records what the training iterations and evaluations see."""

    def __init__(self):
        super().__init__()
        self.train, self.eval, self.lrs, self.loss_checks = [], [], [], []

    @staticmethod
    def _factors(strategy):
        return {float(m.content_factor) for m in strategy.model.modules() if isinstance(m, LPAttention)}

    def before_forward(self, strategy, **kwargs):
        (factor,) = self._factors(strategy)  # every LPA layer has the same factor
        exp, it = strategy.clock.train_exp_counter, strategy.clock.train_exp_iterations
        self.train.append((exp, it, factor))
        self.lrs.append((exp, it, [g["lr"] for g in strategy.optimizer.param_groups]))

    def before_eval_forward(self, strategy, **kwargs):
        self.eval.extend(self._factors(strategy))


# ---------------------------------------------------------------------------------------------- warm-up
def test_content_warmup_function():
    assert content_warmup(0.0, 0.2) == pytest.approx(0.2)
    assert content_warmup(0.5, 0.2) == pytest.approx(0.6)
    assert content_warmup(0.25, 0.0, "cosine") == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))
    assert content_warmup(1.0, 0.3, "cosine") == 1.0
    assert content_warmup(7.0, 0.3) == 1.0 and content_warmup(-1.0, 0.3) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="linear, cosine"):
        content_warmup(0.5, 0.0, "step")


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_warmup_follows_schedule_per_experience_and_eval_sees_one(schedule, cil_benchmark):
    # 3 epochs of 4 iterations, warm-up over 2 epochs = 8 iterations; periodic eval after every epoch.
    plugin = LPAWarmupPlugin(start_factor=0.2, epochs=2, schedule=schedule)
    recorder = Recorder()
    model = make_tiny()
    strategy = _naive(model, [plugin, recorder], epochs=3, eval_every=1)
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience, eval_streams=[cil_benchmark.test_stream[0]])
        assert all(float(m.content_factor) == 1.0 for m in model.modules() if isinstance(m, LPAttention))
    expected = [content_warmup(i / 8, 0.2, schedule) for i in range(12)]
    for exp in (0, 1):
        seen = [f for e, _, f in recorder.train if e == exp]
        assert [i for e, i, _ in recorder.train if e == exp] == list(range(12))
        assert seen == pytest.approx(expected, abs=1e-7)
    assert recorder.eval and set(recorder.eval) == {1.0}  # periodic and final evaluation
    strategy.eval(cil_benchmark.test_stream)
    assert set(recorder.eval) == {1.0}


def test_warmup_iterations_and_skip_first_experience(cil_benchmark):
    plugin = LPAWarmupPlugin(start_factor=0.0, iterations=3, skip_first_experience=True)
    recorder = Recorder()
    strategy = _naive(make_tiny(), [plugin, recorder], epochs=2)
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    assert [f for e, _, f in recorder.train if e == 0] == [1.0] * 8
    assert [f for e, _, f in recorder.train if e == 1] == pytest.approx([0.0, 1 / 3, 2 / 3] + [1.0] * 5)


def _content_grad_norms(model, plugins, benchmark, iterations=3):
    norms = []

    class GradProbe(SupervisedPlugin):
        def after_backward(self, strategy, **kwargs):
            layers = [m for m in strategy.model.modules() if isinstance(m, LPAttention)]
            grads = [g for m in layers for g in (m.content_weight.grad, m.qk.weight.grad)]
            norms.append(torch.sqrt(sum(g.pow(2).sum() for g in grads)).item())
            if len(norms) == iterations:
                strategy.stop_training()

    torch.manual_seed(1)  # same batches in both runs
    _naive(model, plugins + [GradProbe()], optimizer=torch.optim.SGD(model.parameters(), lr=0.1)).train(
        benchmark.train_stream[0]
    )
    return norms


def test_warmup_damps_gradients_into_the_content_path(cil_benchmark):
    model = make_tiny()
    reference = copy.deepcopy(model)
    damped = _content_grad_norms(model, [LPAWarmupPlugin(start_factor=0.0, iterations=4)], cil_benchmark)
    plain = _content_grad_norms(reference, [], cil_benchmark)
    assert damped[0] == 0.0 and plain[0] > 0.0  # factor 0: no gradient reaches c_h or Q/K
    assert all(d < p for d, p in zip(damped, plain))


def test_warmup_warns_once_without_lpa_layers(cil_benchmark):
    model = make_tiny("gpsa")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strategy = _naive(model, [LPAWarmupPlugin()])
        for experience in cil_benchmark.train_stream[:2]:
            strategy.train(experience)
    assert sum("no LPAttention layer" in str(w.message) for w in caught) == 1


def test_warmup_resets_before_teacher_copy_and_survives_copies(cil_benchmark):
    # Warm-up longer than the experience, listed after LwF: the teacher must still be copied with factor 1.
    lwf, warmup = WeightedLwFPlugin(), LPAWarmupPlugin(iterations=1000)
    model = make_tiny()
    strategy = _naive(model, [lwf, warmup])
    strategy.train(cil_benchmark.train_stream[0])
    teacher_factors = {float(m.content_factor) for m in lwf.lwf.prev_model.modules() if isinstance(m, LPAttention)}
    assert teacher_factors == {1.0}
    # Mid warm-up state survives deepcopy and pickling; the factor never enters a state dict.
    warmup.active, warmup.factor = True, 0.25
    for clone in (copy.deepcopy(warmup), pickle.loads(pickle.dumps(warmup))):
        assert (clone.active, clone.factor, clone.iterations) == (True, 0.25, 1000)
    assert not any(k.endswith("content_factor") for k in model.state_dict())
    layer = next(m for m in model.modules() if isinstance(m, LPAttention))
    layer.content_factor.fill_(0.5)
    assert float(next(m for m in copy.deepcopy(model).modules() if isinstance(m, LPAttention)).content_factor) == 0.5


def test_a_teacher_copied_when_an_experience_starts_has_the_content_term_on(cil_benchmark):
    # The recipe lists the warm-up before its distillation, which copies the teacher in before_training_exp: the
    # teacher must be the previous model as evaluated (factor 1), the student warms up from factor 0.
    distillation = OldSampleDistillationPlugin()
    seen = []

    class Probe(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            if distillation.teacher is not None:
                factors = lambda model: {float(m.content_factor) for m in model.modules() if isinstance(m, LPAttention)}
                seen.append((factors(distillation.teacher), factors(strategy.model)))

    strategy = _naive(make_tiny(), [LPAWarmupPlugin(iterations=1000), distillation, Probe()])
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    assert seen and all(teacher == {1.0} for teacher, _ in seen)
    assert seen[0][1] == {0.0}  # the student's first iteration of experience 2 at the start factor


# ------------------------------------------------------------------------------------------- lr schedule
def _timm_cosine(t, peak, total, warmup, start=1e-5, floor=1e-4):
    """timm's CosineLRScheduler value at step t (warm-up not prefixed), written out independently."""
    if t < warmup:
        return start + t * (peak - start) / warmup
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * t / total))


def test_lr_plugin_follows_timm_cosine_per_iteration_with_replay_loader_and_first_experience_epochs(cil_benchmark):
    model = make_tiny()
    optimizer = build_optimizer(model, "adamw", lr=0.5, weight_decay=0.01)  # 2 groups where Avalanche allows
    optimizer.param_groups[0]["lr_scale"] = 0.5
    scales = [g.get("lr_scale", 1.0) for g in optimizer.param_groups]
    schedule = ExperienceLRSchedulePlugin(lr=4e-3, lr_first=2e-3, warmup_epochs=1, min_lr=1e-4, warmup_start_lr=1e-5)
    replay = ReplayPlugin(mem_size=16)  # replaces the dataloader of experience 1 in before_training_exp
    recorder = Recorder()
    strategy = _naive(model, [ExperienceEpochsPlugin(epochs=2, epochs_first=3), schedule, replay, recorder],
                      optimizer=optimizer)
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    for exp, epochs, peak in ((0, 3, 2e-3), (1, 2, 4e-3)):
        rows = [(i, lrs) for e, i, lrs in recorder.lrs if e == exp]
        per_epoch = len(rows) // epochs
        assert per_epoch * epochs == len(rows) and per_epoch == 4  # the replay loader also has 4 batches
        for i, lrs in rows:
            want = _timm_cosine(i, peak, total=len(rows), warmup=per_epoch)
            assert lrs == pytest.approx([want * scale for scale in scales])


def test_lr_plugin_per_epoch_is_the_authors_timm_stepping_and_resets_adam_state(cil_benchmark):
    # The authors call scheduler.step(epoch) after epoch `epoch`: epoch e >= 1 trains at the value of e - 1.
    model = make_tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    schedule = ExperienceLRSchedulePlugin(lr=4e-3, lr_first=2e-3, warmup_epochs=2, min_lr=1e-4, warmup_start_lr=1e-5,
                                          schedule_epochs=6, step="epoch", reset_optimizer_state=True)
    states = []

    class StateProbe(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kwargs):
            if strategy.clock.train_exp_iterations == 0:
                states.append(len(strategy.optimizer.state))

    recorder = Recorder()
    strategy = _naive(model, [ExperienceEpochsPlugin(epochs=4, epochs_first=5), schedule, recorder, StateProbe()],
                      optimizer=optimizer)
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    for exp, epochs, peak in ((0, 5, 2e-3), (1, 4, 4e-3)):
        got = [lrs[0] for e, i, lrs in recorder.lrs if e == exp and i % 4 == 0]
        want = [_timm_cosine(max(e - 1, 0), peak, total=6, warmup=2) for e in range(epochs)]
        assert got == pytest.approx(want)  # cosine over 6 epochs although task 1 trains 5
    assert states == [0, 0]  # a fresh optimizer state at every experience
    assert schedule.current_lr is None and pickle.loads(pickle.dumps(schedule)).step == "epoch"
    with pytest.raises(ValueError, match="iteration, epoch"):
        ExperienceLRSchedulePlugin(lr=1e-3, step="batch")


# ------------------------------------------------------------------------------------------ distillation
def test_distillation_weight_is_old_over_total_and_loss_is_mixed(cil_benchmark):
    lwf = WeightedLwFPlugin(temperature=2.0)
    checks = []

    class LossCheck(SupervisedPlugin):  # listed after lwf: sees the final loss
        def before_backward(self, strategy, **kwargs):
            ce = F.cross_entropy(strategy.mb_output, strategy.mb_y)
            if lwf.lwf.prev_model is None:
                checks.append((strategy.loss.item(), ce.item()))
                return
            old = sorted(lwf.lwf.prev_classes_by_task[0])
            with torch.no_grad():
                teacher = lwf.lwf.prev_model(strategy.mb_x)[:, old] / 2.0
            kd = F.kl_div(F.log_softmax(strategy.mb_output[:, old] / 2.0, 1), F.softmax(teacher, 1),
                          reduction="batchmean")
            lam = lwf.weight
            checks.append((strategy.loss.item(), ((1 - lam) * ce + lam * kd).item()))

    strategy = _naive(make_tiny(), [lwf, LossCheck()])
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
    assert lwf.lambdas == pytest.approx({0: 0.0, 1: 2 / 4, 2: 4 / 6})
    assert distillation_weight(10, 20) == 0.5 and distillation_weight(0, 0) == 0.0
    assert len(checks) == 12 and all(got == pytest.approx(want, rel=1e-5) for got, want in checks)


# ----------------------------------------------------------------------------------------------- herding
# Hand-made 1-D features (second coordinate constant), mean 3.7. Herding order: 3.9, then 3.0 (mean of two
# closest to 3.7), 4.2, 4.1, -3, 10; the closest-to-mean order would be 3.9, 4.1, 4.2, 3.0, ...
VALUES = [3.9, 4.2, 3.0, 10.0, -3.0, 4.1]
HERDING_ORDER = [0, 2, 1, 5, 4, 3]


def _feature_model():
    return nn.Sequential(OrderedDict(backbone=nn.Flatten(), head=nn.Linear(2, 2)))


def _feature_dataset(shift=0.0):
    """Class 0: points (v, 0); class 1: points (v + shift, 1); as Avalanche experience datasets."""
    x = torch.tensor([[v, 0.0] for v in VALUES] + [[v + shift, 1.0] for v in VALUES])
    y = torch.tensor([0] * 6 + [1] * 6)
    data = TargetTensorDataset(x, y)
    from avalanche.benchmarks import nc_benchmark

    bench = nc_benchmark(data, data, n_experiences=1, task_labels=False, fixed_class_order=[0, 1])
    return bench.train_stream[0].dataset


def test_herding_picks_the_herding_exemplars_and_removes_its_hook():
    model = _feature_model()
    data = _feature_dataset()
    agent = SimpleNamespace(model=model.train(), eval_mb_size=4, device="cpu", experience=SimpleNamespace(dataset=data))
    class0 = data.subset(range(6))
    assert ScopedHerdingSelection("backbone", normalize=False).make_sorted_indices(agent, class0) == HERDING_ORDER
    assert not any(m._forward_hooks for m in model.modules()) and model.training
    # Through the class-balanced buffer: 2 per class, the first two herding picks of each class.
    buffer = herding_buffer(4, "backbone", normalize=False)
    buffer.update(agent)  # what ReplayPlugin calls (avalanche 0.5 and 0.6)
    kept = sorted((int(y), round(float(x[0]), 4)) for x, y, *_ in buffer.buffer)
    assert kept == [(0, 3.0), (0, 3.9), (1, 3.0), (1, 3.9)]
    # The workaround exists because Avalanche's own strategy leaves a permanent hook behind (0.5 / 0.6).
    HerdingSelectionStrategy(model, "backbone")
    assert len(model.backbone._forward_hooks) == 1


def test_herding_buffer_bounded_class_balanced_and_hook_free_in_training(cil_benchmark):
    model = make_tiny()
    replay = ReplayPlugin(mem_size=10, storage_policy=herding_buffer(10))
    strategy = _naive(model, [replay])
    seen = []
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
        seen += experience.classes_in_this_experience
        counts = Counter(int(t) for t in replay.storage_policy.buffer.targets)
        assert sum(counts.values()) == 10 and sorted(counts) == sorted(seen)
        assert max(counts.values()) - min(counts.values()) <= 1
        assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="top-level modules"):
        ScopedHerdingSelection("nope").make_sorted_indices(strategy, replay.storage_policy.buffer)


# ------------------------------------------------------------------------------------------- BCE / mixup
def test_seen_classes_bce_label_smoothing_and_unseen_labels():
    criterion = SeenClassesBCE(label_smoothing=0.1)
    criterion.seen_classes = {0, 1, 3}
    logits, labels = torch.randn(4, 5), torch.tensor([0, 3, 1, 3])
    targets = torch.full((4, 3), 0.1 / 3)
    targets[torch.arange(4), torch.tensor([0, 2, 1, 2])] = 0.9 + 0.1 / 3
    want = F.binary_cross_entropy_with_logits(logits[:, [0, 1, 3]], targets)
    assert criterion(logits, labels) == pytest.approx(want.item())
    # A label outside the seen classes (evaluation on a future experience) joins the columns.
    assert criterion(logits, torch.tensor([4, 0, 0, 0])).isfinite()


def test_seen_classes_bce_mixes_the_batch_in_place_with_matching_soft_targets():
    criterion = SeenClassesBCE(label_smoothing=0.1, mixup_alpha=1.0)
    criterion.seen_classes = {0, 1, 2}
    x, labels = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    original = x.clone()
    criterion.before_forward(SimpleNamespace(mb_x=x, mb_y=labels))
    lam = ((x - original.flip(0)) / (original - original.flip(0)))[0, 0, 0, 0].item()
    torch.testing.assert_close(x, lam * original + (1 - lam) * original.flip(0))
    logits = torch.randn(6, 3)
    want = F.binary_cross_entropy_with_logits(logits, mixup_target(labels, 3, lam, 0.1))
    assert criterion(logits, labels) == pytest.approx(want.item(), rel=1e-4)
    # Soft targets are used once; an odd batch is not mixed.
    plain = F.binary_cross_entropy_with_logits(logits, mixup_target(labels, 3, 1.0, 0.1))
    assert criterion(logits, labels) == pytest.approx(plain.item())
    odd = torch.randn(5, 1, 4, 4)
    criterion.before_forward(SimpleNamespace(mb_x=odd.clone(), mb_y=labels[:5]))
    assert criterion.pending_targets is None
