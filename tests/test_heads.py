"""Per-experience heads (the authors' classifier) as an Avalanche dynamic module."""
from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.training import ER_ACE, LwF, Naive, Replay
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_lpa.models import PerExperienceHeads

from .conftest import make_tiny


class GradProbe(SupervisedPlugin):
    """Per training experience: which heads require grad and which got a gradient."""

    def __init__(self):
        super().__init__()
        self.rows = {}

    def after_backward(self, strategy, **kwargs):
        heads = strategy.model.classifier.heads
        self.rows.setdefault(strategy.clock.train_exp_counter, []).append((
            [h.linear.weight.requires_grad for h in heads],
            [h.linear.weight.grad is not None and bool(h.linear.weight.grad.abs().sum() > 0) for h in heads],
        ))


STRATEGIES = {
    "naive": lambda **kw: Naive(**kw),
    "replay": lambda **kw: Replay(mem_size=12, **kw),
    "lwf": lambda **kw: LwF(alpha=1.0, temperature=2.0, **kw),
    "er_ace": lambda **kw: ER_ACE(mem_size=12, batch_size_mem=4, **kw),
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_one_head_per_experience_old_heads_frozen_and_without_gradient(name, cil_benchmark):
    model = make_tiny(head_type="per_experience")
    probe = GradProbe()
    strategy = STRATEGIES[name](
        model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3), criterion=nn.CrossEntropyLoss(),
        train_mb_size=16, device="cpu", evaluator=EvaluationPlugin(loggers=[]), plugins=[probe],
    )
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
        strategy.eval(cil_benchmark.test_stream)
    heads = model.classifier.heads
    assert len(heads) == 3 and [h.classes.tolist() for h in heads] == [[0, 1], [2, 3], [4, 5]]
    for required, got_grad in probe.rows[2]:
        assert required == [False, False, True] and got_grad == [False, False, True]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 6)


def test_logits_are_written_into_the_columns_of_their_classes():
    heads = PerExperienceHeads(4, initial_out_features=2)
    x = torch.randn(3, 4)
    assert heads(x).shape == (3, 2) and bool((heads(x) == -1000).all())  # fresh: masked, like Avalanche's
    heads.adaptation(SimpleNamespace(classes_in_this_experience=[3, 1]))  # training mode: a head for 1, 3
    heads.adaptation(SimpleNamespace(classes_in_this_experience=[0]))
    heads.eval()
    heads.adaptation(SimpleNamespace(classes_in_this_experience=[4]))  # evaluation: only the width grows
    first, second = heads.heads
    assert len(heads.heads) == 2 and heads.classes == [1, 3, 0]
    out = heads(x)
    assert out.shape == (3, 5)
    torch.testing.assert_close(out[:, [1, 3]], first(x))
    torch.testing.assert_close(out[:, 0], second(x)[:, 0])
    assert bool((out[:, [2, 4]] == -1000).all())
    assert not any(p.requires_grad for p in first.parameters())  # frozen when the second head came


def test_a_saved_model_reloads_into_a_fresh_one(cil_benchmark, tmp_path):
    model = make_tiny(head_type="per_experience")
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), criterion=nn.CrossEntropyLoss(),
                     train_mb_size=16, device="cpu", evaluator=EvaluationPlugin(loggers=[]))
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    fresh = make_tiny(head_type="per_experience")
    fresh.load_state_dict(torch.load(tmp_path / "model.pt"))
    x = torch.randn(5, 1, 8, 8)
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), model(x))
    assert fresh.classifier.classes == [0, 1, 2, 3] and len(fresh.classifier.heads) == 2
    # The authors' classifier has no shared final norm: each head normalises its input.
    assert isinstance(fresh.backbone.norm, nn.Identity)
    with pytest.raises(ValueError, match="num_classes=None"):
        make_tiny(head_type="per_experience", num_classes=10)
    with pytest.raises(ValueError, match="incremental, per_experience"):
        make_tiny(head_type="cosine")


def test_a_state_dict_loads_into_heads_grown_in_another_class_order():
    def grown(*experiences):
        heads = PerExperienceHeads(6, initial_out_features=0)
        for classes in experiences:
            heads.adaptation(SimpleNamespace(classes_in_this_experience=classes))
        return heads

    saved, other = grown([2, 3], [0, 1]), grown([0, 1], [2, 3])
    other.load_state_dict(saved.state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(other(x), saved(x))  # column c is class c's logit, as in the saved heads
    assert other.classes == saved.classes == [2, 3, 0, 1]


def test_assigning_head_replaces_the_classifier_as_in_timm():
    model = make_tiny(num_classes=6)
    model.head = nn.Linear(model.embed_dim, 3)  # timm's idiom for a new head
    assert model.classifier is model.head and model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert not any(key.startswith("head.") for key in model.state_dict())
    fresh = make_tiny(num_classes=3)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.classifier.weight, model.classifier.weight)
