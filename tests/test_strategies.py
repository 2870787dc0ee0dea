"""LPAViT inside Avalanche's own strategies, with the growing head and with a fixed head."""
import pytest
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.core import SupervisedPlugin
from avalanche.models import BaseModel
from avalanche.training import DER, EWC, GEM, ER_ACE, LFL, CWRStar, FeatureReplay, ICaRL, LwF, Naive, Replay
from avalanche.training import BiC as AvalancheBiC
from avalanche.training.plugins import BiCPlugin as AvalancheBiCPlugin
from avalanche.training.plugins import EvaluationPlugin, LFLPlugin
from avalanche.training.plugins import bic as bic_module
from torch.optim.lr_scheduler import MultiStepLR

from avalanche_lpa.models import GrowingClassifier
from avalanche_lpa.training import BiC, BiCPlugin

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


# -- Avalanche's model conventions (issue 15, point 1): strategies that look up or replace `classifier` --------
def test_replacing_the_classifier_by_name_leaves_no_head_behind():
    model = make_tiny()
    x = torch.randn(3, 1, 8, 8)
    setattr(model, "classifier", torch.nn.Identity())  # what FeatureReplay does to take the head off
    assert model(x).shape == (3, model.embed_dim)  # features only: the head is not applied a second time
    assert model.head is model.classifier and not any(isinstance(m, GrowingClassifier) for m in model.modules())
    assert isinstance(model, BaseModel) and torch.equal(model.get_features(x), model(x))


def test_feature_replay_takes_our_head_and_trains_it_on_replayed_features(cil_benchmark):
    model = make_tiny()
    head = model.classifier
    strategy = FeatureReplay(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), mem_size=24,
                             batch_size_mem=8, train_mb_size=16, eval_mb_size=64, evaluator=None)
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
    assert strategy.model.train_classifier is head and isinstance(model.classifier, torch.nn.Identity)
    assert head.active_units.tolist() == [1] * 6
    assert strategy.model(torch.randn(2, 1, 8, 8)).shape == (2, 6)
    strategy.eval(cil_benchmark.test_stream)


def test_cwr_star_finds_the_classifier_by_name(cil_benchmark):
    model = make_tiny(num_classes=6)
    strategy = CWRStar(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), criterion=CE(),
                       cwr_layer_name="classifier", train_mb_size=16, eval_mb_size=64, evaluator=None)
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
    assert sorted(model.saved_weights) == list(range(6))  # consolidated rows of our head, one per class
    for c, row in model.saved_weights.items():
        torch.testing.assert_close(model.classifier.weight[c].detach(), torch.as_tensor(row))
    assert not model.backbone.patch_embed.proj.weight.requires_grad  # CWR* froze everything else


def test_lfl_regularises_the_features_of_our_base_model(cil_benchmark):
    class PenaltyProbe(SupervisedPlugin):
        """LFL's penalty on each batch after the update: zero until there is a previous model to differ from."""

        def __init__(self):
            super().__init__()
            self.values = []

        def after_update(self, strategy, **kwargs):
            lfl = next(p for p in strategy.plugins if isinstance(p, LFLPlugin))
            with torch.no_grad():
                penalty = float(lfl.penalty(strategy.mb_x, strategy.model, 1.0))
            self.values.append((strategy.clock.train_exp_counter, penalty))

    model = make_tiny()
    probe = PenaltyProbe()
    strategy = LFL(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), criterion=CE(),
                   lambda_e=1.0, train_mb_size=16, eval_mb_size=64, evaluator=None, plugins=[probe])
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    assert all(v == 0.0 for exp, v in probe.values if exp == 0)
    assert all(v > 0.0 for exp, v in probe.values if exp == 1)  # get_features of the model vs its saved copy


@pytest.mark.parametrize("head", ["fixed", "incremental", "per_experience"])
def test_state_dicts_saved_with_head_keys_still_load(head, cil_benchmark):
    options = {"fixed": dict(num_classes=6), "incremental": {}, "per_experience": dict(head_type="per_experience")}
    model = make_tiny(**options[head])
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), criterion=CE(),
                     train_mb_size=16, evaluator=None)
    strategy.train(cil_benchmark.train_stream[0])  # a grown head, in the growing cases
    old = {("head." + k[len("classifier."):] if k.startswith("classifier.") else k): v
           for k, v in model.state_dict().items()}
    assert any(k.startswith("head.") for k in old) and not any(k.startswith("classifier.") for k in old)
    fresh = make_tiny(**options[head])
    fresh.load_state_dict(old)  # strict: every old key found its place
    x = torch.randn(2, 1, 8, 8)
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), model(x))


@pytest.mark.parametrize("head_type", ["incremental", "per_experience"])
def test_icarl_also_trains_with_a_growing_head(head_type, cil_benchmark):
    # The README used to say iCaRL needs a fixed head; Avalanche's ICaRL (0.5.0, 0.6.0) runs with either.
    model = make_tiny(head_type=head_type)
    strategy = ICaRL(feature_extractor=model.feature_extractor, classifier=model.classifier,
                     optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), memory_size=24, buffer_transform=None,
                     fixed_memory=True, train_mb_size=16, eval_mb_size=64, evaluator=None)
    for experience in cil_benchmark.train_stream:
        strategy.train(experience)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 6)  # the head grew to every class
    icarl_plugin = next(p for p in strategy.plugins if hasattr(p, "y_memory"))
    assert {int(y) for ys in icarl_plugin.y_memory for y in ys} == set(range(6))
    strategy.eval(cil_benchmark.test_stream)


def _verbose_accepted() -> bool:
    try:
        MultiStepLR(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), [1], verbose=False)
    except TypeError:
        return False
    return True


def test_our_bic_corrects_the_bias_where_avalanches_fails_on_current_torch(cil_benchmark):
    def build(cls):
        model = make_tiny()
        return cls(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), criterion=CE(), mem_size=24,
                   stage_2_epochs=2, train_mb_size=16, eval_mb_size=64, evaluator=None)

    theirs = build(AvalancheBiC)
    theirs.train(cil_benchmark.train_stream[0])
    if _verbose_accepted():  # older torch: Avalanche's own BiC works
        theirs.train(cil_benchmark.train_stream[1])
    else:
        with pytest.raises(TypeError, match="verbose"):  # the bias-correction step after the second experience
            theirs.train(cil_benchmark.train_stream[1])
    ours = build(BiC)
    plugin = next(p for p in ours.plugins if isinstance(p, AvalancheBiCPlugin))
    assert isinstance(plugin, BiCPlugin) and plugin.mem_size == 24 and plugin.stage_2_epochs == 2
    for experience in cil_benchmark.train_stream:
        ours.train(experience)
    assert plugin.bias_layer is not None and sorted(plugin.bias_layer.clss.tolist()) == [4, 5]
    assert bic_module.MultiStepLR is MultiStepLR  # the name is put back after the step
    ours.eval(cil_benchmark.test_stream)
