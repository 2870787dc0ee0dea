"""The authors' distillation term (OldSampleDistillationPlugin) against the formula computed by hand."""
import math

import pytest
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_lpa.plugins import ConcatReplayPlugin, OldSampleDistillationPlugin, herding_memory, old_sample_distillation

from .conftest import make_tiny


def _by_hand(student, teacher, labels, old, temperature):
    """KL averaged over every element of the old samples' old-class columns, written out with loops."""
    rows = [i for i, y in enumerate(labels) if y in old]
    total, count = 0.0, 0
    for i in rows:
        s = [student[i][c] / temperature for c in old]
        t = [teacher[i][c] / temperature for c in old]
        log_s = [v - math.log(sum(math.exp(u) for u in s)) for v in s]
        log_t = [v - math.log(sum(math.exp(u) for u in t)) for v in t]
        for ls, lt in zip(log_s, log_t):
            total += math.exp(lt) * (lt - ls)
            count += 1
    return total / count * temperature**2


def test_kd_equals_the_formula_on_a_hand_made_batch():
    student = torch.tensor([[2.0, -1.0, 0.5, 3.0], [0.1, 0.2, 0.3, 0.4], [1.0, 1.5, -2.0, 0.0], [0.0, 0.0, 1.0, 2.0]])
    teacher = torch.tensor([[1.0, 0.0, 9.0, 9.0], [0.5, -0.5, 9.0, 9.0], [2.0, 2.0, 9.0, 9.0], [-1.0, 1.0, 9.0, 9.0]])
    labels = torch.tensor([0, 2, 1, 3])  # samples 0 and 2 belong to the old classes {0, 1}
    for temperature in (1.0, 2.0):
        got = old_sample_distillation(student, teacher, labels, [0, 1], temperature)
        want = _by_hand(student.tolist(), teacher.tolist(), labels.tolist(), [0, 1], temperature)
        assert got.item() == pytest.approx(want, rel=1e-6)
    # "mean", not "batchmean": dividing by samples only would be C_old (here 2) times larger.
    batchmean = F.kl_div(F.log_softmax(student[[0, 2]][:, :2], 1), F.log_softmax(teacher[[0, 2]][:, :2], 1),
                         reduction="batchmean", log_target=True)
    assert batchmean.item() == pytest.approx(2 * old_sample_distillation(student, teacher, labels, [0, 1]).item())
    # No sample of an old class in the batch: no KD at all.
    assert old_sample_distillation(student, teacher, torch.tensor([2, 3, 2, 3]), [0, 1]) is None
    assert old_sample_distillation(student, teacher, labels, []) is None


def test_plugin_mixes_loss_with_lambda_only_when_old_samples_are_present(cil_benchmark):
    distill = OldSampleDistillationPlugin()
    memory = herding_memory(8)
    checks = []

    class LossCheck(SupervisedPlugin):  # listed after the plugin: sees the final loss
        def before_backward(self, strategy, **kwargs):
            ce = F.cross_entropy(strategy.mb_output, strategy.mb_y)
            old = sorted(distill.old_classes)
            if distill.teacher is None:
                checks.append(("first", strategy.loss.item(), ce.item()))
                return
            with torch.no_grad():
                teacher = distill.teacher(strategy.mb_x)
            kd = old_sample_distillation(strategy.mb_output, teacher, strategy.mb_y, old)
            lam = distill.weight
            want = ce if kd is None else (1 - lam) * ce + lam * kd
            checks.append(("old" if kd is not None else "new", strategy.loss.item(), want.item()))

    teachers = []

    class TeacherCheck(SupervisedPlugin):  # the teacher is the model as the experience starts, frozen
        def before_training_iteration(self, strategy, **kwargs):
            if distill.teacher is not None and strategy.clock.train_exp_iterations == 0:
                same = all(torch.equal(a, b) for a, b in zip(distill.teacher.state_dict().values(),
                                                              strategy.model.state_dict().values()))
                frozen = not distill.teacher.training and not any(p.requires_grad for p in distill.teacher.parameters())
                teachers.append(same and frozen)

    model = make_tiny(head_type="per_experience")
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), criterion=nn.CrossEntropyLoss(),
                     train_mb_size=8, device="cpu", evaluator=EvaluationPlugin(loggers=[]),
                     plugins=[ConcatReplayPlugin(memory), distill, LossCheck(), TeacherCheck()])
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
    assert distill.lambdas == pytest.approx({0: 0.0, 1: 2 / 4, 2: 4 / 6})
    kinds = {kind for kind, _, _ in checks}
    assert {"first", "old"} <= kinds  # memory batches distilled; (new-only batches may or may not occur)
    assert all(got == pytest.approx(want, rel=1e-5) for _, got, want in checks)
    assert distill.teacher is None and distill.seen_classes == set(range(6))
    assert teachers == [True, True]
    with pytest.raises(ValueError, match="temperature"):
        OldSampleDistillationPlugin(temperature=0)
