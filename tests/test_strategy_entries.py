"""What a strategy needs lives in its registry entry: the runner asks the entry, never the name.

Every entry says which model family and head it needs, how the trained network comes back from the strategy
and whether it trains on the whole stream at once; the runner (``runner/``: the run, the model label, the run card)
and the config (its validation of the model keywords) hold no branch on a strategy name.
"""
import ast
import dataclasses
from pathlib import Path

import pytest
import timm
import torch
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin

from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.runner import build_model, run
from avalanche_lpa.runner.model import model_label
from avalanche_lpa.models import DyTox, LocalityViT
from avalanche_lpa.training import (
    DYTOX,
    DYTOX_NAMES,
    HEADS,
    LOCALITY_VIT,
    STRATEGIES,
    ModelFamily,
    Spec,
    build_strategy,
    strategy_entry,
    strategy_options,
)
from avalanche_lpa.training.registry import SPECS
from avalanche_lpa.training.trained import own_model

from .conftest import make_tiny

PACKAGE = Path(__file__).resolve().parents[1] / "avalanche_lpa"
#: The runner (every module of it: the run, the model's timm name, the run card, ...) and the config (the keywords
#: a config may set); not the config reference, which documents the recipes' options by name.
RUNNER_FILES = tuple(sorted(str(p.relative_to(PACKAGE)) for folder in ("runner", "config")
                            for p in (PACKAGE / folder).glob("*.py") if p.name != "reference.py"))
TINY_MODEL = "{img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 2, num_heads: 9}"


def _config(tmp_path, name, *extra):
    return load_config(None, [
        "data.dataset=synthetic", "data.n_experiences=2", "model.preset=tiny", f"model.overrides={TINY_MODEL}",
        f"strategy.name={name}", "strategy.train_mb_size=16", "evaluation.progress_bar=false",
        "evaluation.locality_probe_size=8", "output.plots=false", f"output.dir={tmp_path / name}", *extra,
    ])


# -- every entry answers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", STRATEGIES)
def test_every_entry_answers_what_the_runner_asks(name):
    entry = strategy_entry(name)
    assert isinstance(entry, Spec) and entry is SPECS[name]
    assert entry.head in HEADS and isinstance(entry.whole_stream, bool) and callable(entry.trained_model)
    assert isinstance(entry.model, ModelFamily) and timm.is_model(entry.model.name("lpa", "tiny"))
    assert "attn_type" in entry.model.keywords()
    keywords = entry.head_keywords(6, "per_experience")
    if entry.head == "fixed":
        assert keywords == {"num_classes": 6}
    else:  # a growing head of the config's kind, or none where the model grows heads of its own
        assert keywords == ({} if entry.model.own_heads else {"head_type": "per_experience"})


def test_the_entries_that_differ_from_the_defaults():
    entries = {name: strategy_entry(name) for name in STRATEGIES}
    assert [n for n, e in entries.items() if e.model is DYTOX] == list(DYTOX_NAMES)
    assert all(e.model is LOCALITY_VIT for n, e in entries.items() if n not in DYTOX_NAMES)
    assert [n for n, e in entries.items() if e.whole_stream] == ["joint"]
    taken_apart = {n: e.trained_model.__name__ for n, e in entries.items() if e.trained_model is not own_model}
    assert taken_apart == {"icarl": "icarl_model", "feature_replay": "feature_replay_model", "scr": "scr_model",
                           "slda": "slda_model", "cope": "cope_model"}
    with pytest.raises(ValueError, match="unknown strategy 'l2p'; valid names: naive, "):
        strategy_entry("l2p")


# -- under several processes ----------------------------------------------------------------------------------
#: What Avalanche's strategies compute per process beyond the gradient DDP averages (read in avalanche-lib 0.6.0;
#: docs/distributed.md): refused under torchrun, or trained with the reason the processes line gives.
REFUSED_UNDER_TORCHRUN = ["mir", "slda", "gss", "cope", "mer"]
ANOTHER_MODEL_UNDER_ANOTHER_PROCESS_COUNT = ["bic", "scr", "er_aml"]


def test_the_entries_say_which_strategies_train_another_model_under_another_process_count():
    entries = {name: strategy_entry(name) for name in STRATEGIES}
    assert [n for n, e in entries.items() if e.torchrun] == REFUSED_UNDER_TORCHRUN
    assert [n for n, e in entries.items() if e.processes] == ANOTHER_MODEL_UNDER_ANOTHER_PROCESS_COUNT
    for entry in entries.values():
        for words in filter(None, (entry.torchrun, entry.processes)):
            assert "\n" not in words and not words.endswith(".")  # one clause inside a line


@pytest.mark.parametrize("name", STRATEGIES)
def test_build_strategy_refuses_under_torchrun_what_cannot_train_there(name, monkeypatch, tmp_path):
    from avalanche_lpa.training import builder
    config = _config(tmp_path, name).strategy
    model = build_model(_config(tmp_path, name), 4)
    monkeypatch.setattr(builder, "_processes", lambda: 2)  # as under torchrun with 2 processes
    if name in REFUSED_UNDER_TORCHRUN:
        with pytest.raises(ValueError) as info:
            build_strategy(config, model, device="cpu", num_classes=4)
        message = str(info.value)
        assert message.startswith(f"{name} does not train under torchrun (2 processes): ") and "\n" not in message
        assert message.endswith("; run it in one process")
    else:
        build_strategy(config, model, device="cpu", num_classes=4)


def test_the_processes_line_gives_the_strategys_reason():
    from avalanche_lpa.runner.card import process_count_note
    base = ["data.dataset=synthetic", "strategy.train_mb_size=16"]
    bic = process_count_note(load_config(None, [*base, "strategy.name=bic", "strategy.mem_size=20"]), 2)
    assert bic == ("any number at global batch 32: the same batches, but BiC's distillation normalises over each "
                   "process's batch and its bias correction trains in each process")
    assert process_count_note(load_config(None, [*base, "strategy.name=ewc"]), 2) == \
        "any number at global batch 32: the same batches"
    assert process_count_note(load_config(None, [*base, "strategy.name=naive"]), 2) == \
        "any number at global batch 32: the same batches"
    assert process_count_note(load_config(None, [*base, "strategy.name=replay"]), 1) == \
        "any number at global batch 16: the same batches and the same memory"
    assert process_count_note(load_config(None, [*base, "strategy.name=slda"]), 1) == (
        "one only: slda does not train under torchrun (it fits its class means and covariance in each process on "
        "that process's share of the data and never combines them)")
    # DER and FeatureReplay: their memory batches are dealt over the processes (DistributedPlugin), per process
    # like the training batch: another process count keeps both products.
    assert process_count_note(load_config(None, [*base, "strategy.name=der", "strategy.mem_size=20"]), 1) == \
        "any number at global batch 16: the same batches and the same memory"
    assert process_count_note(load_config(None, [*base, "strategy.name=feature_replay", "strategy.mem_size=40"]), 2) \
        == "any number at global batch 32 and memory batch 20: the same batches and the same memory"
    assert process_count_note(load_config(None, [*base, "strategy.name=agem"]), 2) == \
        "any number at global batch 32 and reference batch 128: the same batches"
    assert process_count_note(load_config(None, [*base, "strategy.name=er_ace", "strategy.mem_size=40"]), 2) == \
        "any number at global batch 32 and memory batch 20: the same batches and the same memory"


# -- the runner holds no branch on a strategy name ----------------------------------------------------------
def _strategy_names(node):
    return sorted({c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in STRATEGIES})


@pytest.mark.parametrize("file", RUNNER_FILES)
def test_the_runner_holds_no_branch_on_a_strategy_name(file):
    tree = ast.parse((PACKAGE / file).read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Compare, ast.match_case)):  # name == "icarl", name in ("dytox", ...), case "scr"
            assert not _strategy_names(node), f"{file}:{getattr(node, 'lineno', '?')} compares strategy names"
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not used & {"DYTOX_NAMES", "RECIPES", "needs_fixed_head"}, f"{file} groups strategies by name"


def test_the_runner_names_no_strategy_but_the_plain_naive_of_eval_only():
    for module, names in (("runs.py", []), ("evaluate.py", ["naive"])):  # --eval-only: Avalanche's eval loop
        tree = ast.parse((PACKAGE / "runner" / module).read_text())
        built = [call.args[0] for call in ast.walk(tree) if isinstance(call, ast.Call)
                 and getattr(call.func, "id", None) == "build_strategy" and isinstance(call.args[0], ast.Constant)]
        assert [c.value for c in built] == names and _strategy_names(tree) == names, module


# -- the special cases, asked of their entries ------------------------------------------------------------------
#: What each strategy evaluates (or, for nearest-mean classifiers, the features it classifies) and the same
#: computed by our model class.
EVALUATED = {
    "icarl": (lambda m, x: m.train_classifier(m.feature_extractor(x)), lambda n, x: n(x)),
    "feature_replay": (lambda m, x: m(x), lambda n, x: n(x)),
    "scr": (lambda m, x: m.feature_extractor(x), lambda n, x: n.backbone(x)),
    "slda": (lambda m, x: m(x), lambda n, x: n.backbone(x)),
    "cope": (lambda m, x: m(x), lambda n, x: torch.nn.functional.normalize(n(x), dim=1)),  # its L2 embedding
}


def _model(name, seed):
    torch.manual_seed(seed)
    return make_tiny(num_classes=6) if strategy_entry(name).head == "fixed" else make_tiny()


@pytest.mark.parametrize("name", sorted(EVALUATED))
def test_the_trained_network_from_the_entry_is_the_one_the_strategy_evaluates(name, cil_benchmark):
    options = dict(train_mb_size=16, mem_size=32, batch_size_mem=16, projection_dim=8)
    evaluator = EvaluationPlugin(accuracy_metrics(stream=True), loggers=[])
    strategy = build_strategy(name, _model(name, 0), device="cpu", evaluator=evaluator, num_classes=6,
                              **{k: v for k, v in options.items() if k in strategy_options(name)})
    strategy.train(cil_benchmark.train_stream[0])
    x = torch.stack([cil_benchmark.test_stream[0].dataset[i][0] for i in range(8)])
    evaluated, ours = EVALUATED[name]
    strategy.model.eval()
    with torch.no_grad():
        expected = evaluated(strategy.model, x)
        # After a resume the runner's model is a fresh one: the trained parts must come from the strategy.
        network = strategy_entry(name).trained_model(strategy, _model(name, 1))
        assert isinstance(network, LocalityViT)
        saved = _model(name, 2)  # model.pt loads into a freshly built model
        saved.load_state_dict(network.state_dict())
        torch.testing.assert_close(ours(saved.eval(), x), expected)
        torch.testing.assert_close(evaluated(strategy.model, x), expected)  # the strategy is left as it was


def test_dytox_gets_its_model_from_its_entry(tmp_path):
    config = _config(tmp_path, "dytox")
    assert model_label(config) == "dytox_lpa_tiny" and isinstance(build_model(config, 4), DyTox)


def test_the_runner_follows_the_entry_not_the_name(tmp_path, monkeypatch):
    naive = SPECS["naive"]
    # Model family: a DyTox entry under another name gets a DyTox, and its keywords are valid model overrides.
    monkeypatch.setitem(SPECS, "naive", dataclasses.replace(naive, model=DYTOX))
    config = _config(tmp_path, "naive", "model.overrides.joint_tokens=true")
    assert model_label(config) == "dytox_lpa_tiny" and isinstance(build_model(config, 4), DyTox)
    # Whole-stream training is refused by what the entry says.
    monkeypatch.setitem(SPECS, "naive", dataclasses.replace(naive, whole_stream=True))
    with pytest.raises(ConfigError, match="strategy 'naive' trains once on the whole stream"):
        run(_config(tmp_path, "naive"))
    # The saved network is the one the entry gives back.
    given = []

    def trained_model(strategy, model):
        given.append(strategy.model)
        return strategy.model

    monkeypatch.setitem(SPECS, "naive", dataclasses.replace(naive, trained_model=trained_model))
    run(_config(tmp_path, "naive", "strategy.train_epochs=1"))
    saved = torch.load(tmp_path / "naive" / "model.pt", weights_only=True)
    assert len(given) == 1 and all(torch.equal(saved[k], v) for k, v in given[0].state_dict().items())
