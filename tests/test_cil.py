"""CIL evaluation: metric-name parsing (both benchmark APIs), the summary, and the evaluator in real runs."""
import math

import pytest
import torch
from avalanche.benchmarks.scenarios import class_incremental_benchmark
from avalanche.logging import InteractiveLogger
from avalanche.training import Replay
from torch import nn

from avalanche_lpa.data import TargetTensorDataset
from avalanche_lpa.metrics import (
    LocalityPluginMetric,
    accuracy_matrix,
    cil_evaluator,
    experience_sizes,
    locality_history,
    parse_metric_name,
    summarize,
    summarize_matrix,
)

from .conftest import make_tiny

# A hand-made run: experience 0 improves after step 1 (so the two forgetting definitions differ).
R = [[0.6, 0.0, 0.0], [0.9, 0.8, 0.0], [0.7, 0.5, 0.6]]


def _history(matrix, legacy, xs=(10, 20, 30)):
    """``get_all_metrics()``-style history of Top1_Acc_Exp values, in either key format."""
    task = "/Task000" if legacy else ""
    return {
        f"Top1_Acc_Exp/eval_phase/test_stream{task}/Exp{j:03d}": (list(xs), [row[j] for row in matrix])
        for j in range(len(matrix[0]))
    }


def test_metric_names_of_both_benchmark_apis_parse():
    legacy = parse_metric_name("Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp001")
    new = parse_metric_name("Top1_Acc_Exp/eval_phase/test_stream/Exp001")
    parts = (legacy.metric, legacy.phase, legacy.stream, legacy.task, legacy.exp)
    assert parts == ("Top1_Acc_Exp", "eval", "test", 0, 1)
    assert (new.metric, new.stream, new.task, new.exp) == ("Top1_Acc_Exp", "test", None, 1)
    stream = parse_metric_name("Top1_Acc_Stream/eval_phase/valid_set_stream/Task002")
    assert (stream.stream, stream.task, stream.exp) == ("valid_set", 2, None)
    head = parse_metric_name("Locality_Stream/eval_phase/test_stream/Layer03/Head11")
    assert (head.metric, head.exp, head.rest) == ("Locality_Stream", None, ("Layer03", "Head11"))
    assert parse_metric_name("EvalStream/Acc_Matrix") is None


def test_summary_of_a_hand_made_matrix():
    s = summarize_matrix(R, exp_sizes=[10, 20, 30])
    assert s.seen_accuracies == pytest.approx([0.6, 25 / 30, 35 / 60])  # (10*.9 + 20*.8)/30, (7 + 10 + 18)/60
    assert s.avg_incremental_accuracy == pytest.approx((0.6 + 25 / 30 + 35 / 60) / 3)
    assert s.last_accuracy == pytest.approx(35 / 60)
    assert s.avg_forgetting_avalanche == pytest.approx(((0.6 - 0.7) + (0.8 - 0.5)) / 2)  # 0.1
    assert s.avg_forgetting_max == pytest.approx(((0.9 - 0.7) + (0.8 - 0.5)) / 2)  # 0.25
    assert s.bwt == pytest.approx(-0.1)
    equal = summarize_matrix(R)
    assert equal.seen_accuracies == pytest.approx([0.6, 0.85, 0.6])
    assert equal.exp_sizes is None


def test_summary_edge_cases():
    one = summarize_matrix([[0.7, 0.0]])
    assert one.last_accuracy == 0.7 and one.avg_forgetting_avalanche is None and one.bwt is None
    with pytest.raises(ValueError, match="rows"):
        summarize_matrix([[0.5], [0.5]])  # more steps than experiences
    with pytest.raises(ValueError, match="seen experience"):
        summarize_matrix([[0.5, math.nan], [math.nan, 0.5]])
    assert summarize_matrix([[0.5, math.nan]]).as_dict()["accuracy_matrix"] == [[0.5, None]]


@pytest.mark.parametrize("legacy", [True, False])
def test_accuracy_matrix_reads_both_key_formats(legacy):
    history = _history(R, legacy)
    history["Top1_Acc_Stream/eval_phase/test_stream"] = ([10, 20, 30], [0.1, 0.2, 0.3])  # ignored
    history["Top1_Acc_Exp/eval_phase/train_stream/Exp000"] = ([10], [1.0])  # another stream: ignored
    assert accuracy_matrix(history) == R
    assert summarize(history, exp_sizes=[10, 20, 30]) == summarize_matrix(R, [10, 20, 30])


def test_eval_points_select_rows_and_later_values_win():
    history = _history([[0.1, 0.0, 0.0]] + R, legacy=False, xs=(0, 10, 20, 30))  # an eval before training
    with pytest.raises(ValueError, match="rows"):
        summarize(history)
    assert accuracy_matrix(history, points=[10, 20, 30]) == R
    with pytest.raises(ValueError, match="eval points"):
        accuracy_matrix(history, points=[10, 15])
    history["Top1_Acc_Exp/eval_phase/test_stream/Exp000"][0].append(30)
    history["Top1_Acc_Exp/eval_phase/test_stream/Exp000"][1].append(0.25)  # evaluated twice at x=30
    assert accuracy_matrix(history, points=[30])[0][0] == 0.25
    with pytest.raises(ValueError, match="Top1_Acc_Exp"):
        accuracy_matrix({}, stream="test")


def test_evaluator_holds_avalanche_metrics_and_locality():
    names = {type(m).__name__ for m in cil_evaluator(loggers=[]).metrics}
    assert {"ExperienceAccuracy", "StreamAccuracy", "ExperienceForgetting", "StreamForgetting", "ExperienceBWT",
            "StreamBWT", "AccuracyMatrix", "LocalityPluginMetric"} <= names
    assert "LocalityPluginMetric" not in {type(m).__name__ for m in cil_evaluator(loggers=[], locality=False).metrics}
    assert any(isinstance(lg, InteractiveLogger) for lg in cil_evaluator().loggers)
    probe = [m for m in cil_evaluator(loggers=[], probe_size=7).metrics if isinstance(m, LocalityPluginMetric)]
    assert probe[0].probe_size == 7


def _new_api_benchmark():
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.randn(6, 1, 8, 8, generator=generator)

    def split(per_class):
        labels = torch.arange(6).repeat_interleave(per_class)
        noise = 0.5 * torch.randn(len(labels), 1, 8, 8, generator=generator)
        return TargetTensorDataset(prototypes[labels] + noise, labels)

    datasets = {"train": split(32), "test": split(16)}
    return class_incremental_benchmark(datasets, num_experiences=3, class_order=list(range(6)))


@pytest.fixture(params=["legacy", "new"])
def trained(request, cil_benchmark):
    """A Replay run of the tiny LPA model on the synthetic data, in both benchmark APIs."""
    benchmark = cil_benchmark if request.param == "legacy" else _new_api_benchmark()
    model = make_tiny()
    evaluator = cil_evaluator(loggers=[], probe_size=24)
    strategy = Replay(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
                      criterion=nn.CrossEntropyLoss(), mem_size=32, train_mb_size=16, train_epochs=4,
                      eval_mb_size=64, evaluator=evaluator)
    for experience in benchmark.train_stream:
        strategy.train(experience)
        last = strategy.eval(benchmark.test_stream)
    return request.param, benchmark, strategy, last


def test_summary_of_a_real_run_agrees_with_avalanche(trained):
    api, benchmark, strategy, last = trained
    task = "/Task000" if api == "legacy" else ""
    sizes = experience_sizes(benchmark.test_stream)
    summary = summarize(strategy, exp_sizes=sizes)
    matrix = torch.tensor(summary.accuracy_matrix)
    assert matrix.shape == (3, 3)
    assert torch.allclose(matrix, last["EvalStream/Acc_Matrix"].float(), atol=1e-6)
    assert summary.avg_forgetting_avalanche == pytest.approx(last["StreamForgetting/eval_phase/test_stream"])
    assert summary.bwt == pytest.approx(last["StreamBWT/eval_phase/test_stream"])
    # After the last step every class is seen: the seen-classes accuracy is Avalanche's stream accuracy.
    assert summary.last_accuracy == pytest.approx(last[f"Top1_Acc_Stream/eval_phase/test_stream{task}"])
    assert 0.0 < summary.avg_incremental_accuracy <= 1.0
    locality = locality_history(strategy)
    assert len(locality["mean"]) == 3 and len(locality["layers"][0]) == 2 and len(locality["heads"][2][1]) == 9
    assert locality["mean"][-1] == pytest.approx(last["Locality_Stream/eval_phase/test_stream"])


def test_accuracy_matrix_metric_fixes_eval_before_training_and_history(cil_benchmark):
    model = make_tiny()
    evaluator = cil_evaluator(loggers=[], locality=False)
    strategy = Replay(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
                      criterion=nn.CrossEntropyLoss(), mem_size=32, train_mb_size=16, train_epochs=3,
                      evaluator=evaluator)
    strategy.eval(cil_benchmark.test_stream)  # upstream 0.5/0.6 raised TypeError here
    ends = []
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
        strategy.eval(cil_benchmark.test_stream)
        ends.append(strategy.clock.train_iterations)
    ours = accuracy_matrix(strategy, points=ends)
    assert len(accuracy_matrix(strategy)) == 3  # the eval before training is a point of its own
    xs, matrices = evaluator.get_all_metrics()["EvalStream/Acc_Matrix"]
    assert xs == ends  # nothing emitted before training
    first, last = matrices
    assert torch.allclose(first[0], torch.tensor(ours[0]))
    assert first[1].abs().sum() == 0  # the history keeps the matrix as it was after step 0
    assert torch.allclose(last[:2], torch.tensor(ours))
    assert ours[1][1] > 0
