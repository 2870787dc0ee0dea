"""LPAViT inside Avalanche's own strategies, with the growing head and with a fixed head."""
import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import DER, EWC, GEM, ER_ACE, ICaRL, LwF, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin

from .conftest import make_tiny

CE = torch.nn.CrossEntropyLoss


def _growing(name, model, optimizer):
    common = dict(model=model, optimizer=optimizer, train_mb_size=16, train_epochs=1, eval_mb_size=64, evaluator=None)
    if name == "naive":
        return Naive(criterion=CE(), **common)
    if name == "replay":
        return Replay(criterion=CE(), mem_size=24, **common)
    if name == "lwf":
        return LwF(criterion=CE(), alpha=1.0, temperature=2.0, **common)
    if name == "ewc":
        return EWC(criterion=CE(), ewc_lambda=1.0, **common)
    if name == "gem":
        return GEM(criterion=CE(), patterns_per_exp=8, memory_strength=0.5, **common)
    if name == "er_ace":
        return ER_ACE(criterion=CE(), mem_size=24, **common)
    raise AssertionError(name)


def _optimizer_params(optimizer):
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("name", ["naive", "replay", "lwf", "ewc", "gem", "er_ace"])
def test_growing_head_trains_with_avalanche_strategies(name, cil_benchmark):
    model = make_tiny()
    strategy = _growing(name, model, torch.optim.Adam(model.parameters(), lr=1e-3))
    seen = []
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
        seen += experience.classes_in_this_experience
        active = model.head.active_units.nonzero().flatten().tolist()
        assert active == sorted(seen)
        assert model.head.classifier.out_features == max(seen) + 1
        # The optimizer holds exactly the (new) head parameters and the backbone's.
        assert _optimizer_params(strategy.optimizer) == {id(p) for p in model.parameters()}
    strategy.eval(cil_benchmark.test_stream)


def test_fixed_head_trains_with_der(cil_benchmark):
    model = make_tiny(num_classes=6)
    strategy = DER(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        mem_size=24,
        train_mb_size=16,
        train_epochs=1,
        eval_mb_size=64,
        evaluator=None,
    )
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
    assert model.head.out_features == 6
    assert len(strategy.storage_policy.buffer) > 0


def test_fixed_head_trains_with_icarl(cil_benchmark):
    model = make_tiny(num_classes=6)
    strategy = ICaRL(
        feature_extractor=model.feature_extractor,
        classifier=model.classifier,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        memory_size=24,
        buffer_transform=None,
        fixed_memory=True,
        train_mb_size=16,
        train_epochs=1,
        eval_mb_size=64,
        evaluator=None,
    )
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
    # iCaRL wraps our feature extractor; the exemplar memory covers every class trained on.
    assert strategy.model.feature_extractor is model.feature_extractor
    icarl_plugin = next(p for p in strategy.plugins if hasattr(p, "y_memory"))
    assert {int(y) for ys in icarl_plugin.y_memory for y in ys} == set(range(6))
    strategy.eval(cil_benchmark.test_stream)


def test_naive_learns_the_last_experience_well_above_chance(cil_benchmark):
    model = make_tiny()
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    strategy = Naive(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
        criterion=CE(),
        train_mb_size=16,
        train_epochs=4,
        eval_mb_size=64,
        evaluator=evaluator,
    )
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
    results = strategy.eval(cil_benchmark.test_stream[-1:])
    accuracy = results["Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp002"]
    assert accuracy > 0.9  # chance is 1/6 over the seen classes, 1/2 within the experience
