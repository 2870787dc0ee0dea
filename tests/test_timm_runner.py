"""Any timm model in the runner: timm:<name> end to end on fake Fashion-MNIST, errors, strategies, resume, compare."""
import json
import runpy
import struct
from pathlib import Path

import pytest
import timm
import torch
from avalanche.training import ICaRL, Naive
from torch import nn

from avalanche_lpa.data import datasets as data_module
from avalanche_lpa.data import synthetic_benchmark
from avalanche_lpa.cli import main
from avalanche_lpa.runner import compare
from avalanche_lpa.config import ConfigError, load_config
from avalanche_lpa.report import attention_maps_figure, read_results
from avalanche_lpa.runner import RunInterrupted, evaluate_saved_run, run
from avalanche_lpa.metrics import LocalityPluginMetric, cil_evaluator
from avalanche_lpa.models import GrowingClassifier, PerExperienceHeads, TimmClassifier, timm_classifier

from .fake_datasets import make_fake_fashion_mnist_gz
from .test_experiment import CONFIGS, REPO, synthetic_config
from .test_timm_attention import uniform_grid_distance

VIT = "timm:vit_tiny_patch16_224"
TINY_VIT = "{embed_dim: 16, depth: 2, num_heads: 2}"


@pytest.fixture
def fake_fmnist(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "DEBIAN_FASHION_MNIST", make_fake_fashion_mnist_gz(tmp_path / "debian"))
    return tmp_path / "data"


def _png_width(path: Path) -> int:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">I", data[16:20])[0]  # IHDR width


@pytest.mark.slow
def test_timm_vit_runs_the_fashion_mnist_pipeline_end_to_end(fake_fmnist, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = [
        "split_fashion_mnist.py", "--model", VIT, "--data-root", str(fake_fmnist), "--output", str(out),
        "--set", f"model.kwargs={TINY_VIT}", "--set", "evaluation.progress_bar=false",
        "--set", "strategy.epochs_first=1", "--set", "strategy.train_epochs=1", "--set", "strategy.mem_size=20",
        "--set", "strategy.train_mb_size=16", "--set", "strategy.finetune.epochs=1",
        "--set", "evaluation.locality_probe_size=16",
    ]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "experiments" / "split_fashion_mnist.py"), run_name="__main__")
    assert exit_info.value.code == 0, capsys.readouterr().err
    results = read_results(out / "results.json")
    assert results["model"] == VIT and results["config"]["model"]["name"] == VIT
    assert len(results["accuracy_matrix"]) == 5
    assert len(results["locality"]["layers"]) == 5 and all(len(step) == 2 for step in results["locality"]["layers"])
    # 28 px, patch 4 (the config's): a 7x7 grid, whose uniform-attention distance is the figure's reference
    assert results["locality"]["uniform_distance"] == pytest.approx(uniform_grid_distance(7), abs=1e-5)
    state = torch.load(out / "model.pt", weights_only=True)
    assert "classifier.heads.4.linear.weight" in state and "backbone.blocks.1.attn.qkv.weight" in state
    record = json.loads((out / "attention_maps.json").read_text())
    assert len(record["snapshots"]) == 5 and record["grid"] == [7, 7]
    assert [s["trained_experiences"] for s in record["snapshots"]] == [1, 2, 3, 4, 5]
    assert record["labels"] == [0, 0, 1, 1]  # class-balanced from the first experience
    assert torch.tensor(record["images"]).shape == (4, 1, 28, 28)
    figure = attention_maps_figure(out)
    assert len(figure.axes) == 4 * 5
    assert [ax.get_title().split("\n")[0] for ax in figure.axes[:5]] == [f"after exp {e}" for e in range(1, 6)]
    # The file is that figure: its width is the width of five columns.
    assert _png_width(out / "attention_maps.png") == round(figure.get_size_inches()[0] * 120)
    again = evaluate_saved_run(out)  # the saved model loads into a freshly built timm model with grown heads
    stream = next(v for k, v in again["metrics"].items() if k.startswith("Top1_Acc_Stream"))
    assert stream == pytest.approx(results["summary"]["last_accuracy"])


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--model", "timm:no_such_model"], "model.name: 'no_such_model' is not a timm model; pick a name from "
                                           "timm.list_models()"),
        (["--model", VIT, "--set", "model.kwargs.in_chans=3"],
         "model.name timm:vit_tiny_patch16_224: the model cannot take the dataset's 1x28x28 images"),
        (["--model", "timm:resnet18", "--set", "model.kwargs={img_size: null, patch_size: null}"],
         "it has no attention layer the locality metric can read (supported: avalanche_lpa.layers.attention."
         "PatchAttention, timm."),
        (["--model", VIT, "--set", "model.kwargs.embed_dmi=3"], "timm.create_model('vit_tiny_patch16_224', "),
        (["--model", VIT, "--set", "model.kwargs.num_classes=3"], "model.kwargs.num_classes: the timm model is built "
                                                                 "as a feature extractor"),
    ],
    ids=["unknown", "channels", "no-attention", "bad-keyword", "num-classes"],
)
def test_bad_timm_models_are_one_line_errors_before_anything_is_written(fake_fmnist, tmp_path, capsys, flags, expected):
    out = tmp_path / "out"
    code = main(flags + ["--data-root", str(fake_fmnist), "--output", str(out)], description="",
                default_config=CONFIGS / "fashion_mnist.yaml")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and expected in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_model_flag_rejects_other_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", "vit"], description="", default_config=CONFIGS / "fashion_mnist.yaml")
    assert exit_info.value.code == 2 and "choose lpa, gpsa, mhsa or timm:<name>" in capsys.readouterr().err


def test_timm_config_from_yaml_keys(tmp_path):
    config = load_config(CONFIGS / "fashion_mnist.yaml", [f"model.name={VIT}", f"model.kwargs={TINY_VIT}"])
    assert config.model.name == VIT and config.model.kwargs["depth"] == 2
    assert load_config(CONFIGS / "fashion_mnist.yaml", values={"model.attn_type": "gpsa"}).model.name is None
    with pytest.raises(ConfigError, match=r"model.name: 'deit_tiny_patch16_224' is not a timm model spec; write "
                                          r"timm:<name>"):
        load_config(None, ["model.name=deit_tiny_patch16_224"])


@pytest.mark.parametrize("strategy", ["icarl", "der", "cope"])
def test_a_timm_model_gets_the_fixed_head_its_strategy_needs_whatever_model_head_says(tmp_path, strategy):
    from avalanche_lpa.runner import build_model

    config = synthetic_config(tmp_path, f"model.name={VIT}", f"model.kwargs={TINY_VIT}", f"strategy.name={strategy}",
                              "model.head=per_experience")
    model = build_model(config, 6)  # model.head shapes a growing head; these strategies need a Linear over 6 classes
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 6


@pytest.mark.parametrize("strategy", ["lpa", "dytox"])
def test_the_recipes_freeze_set_builds_on_a_timm_model(tmp_path, strategy):
    # The shipped freeze sets name LocalityViT's parts (backbone.cls_blocks), which a timm ViT lacks: they freeze
    # what the model has; a misspelt name of the user's is still refused.
    from avalanche_lpa.runner import build_model
    from avalanche_lpa.training import build_strategy

    config = synthetic_config(tmp_path, f"model.name={VIT}", f"model.kwargs={TINY_VIT}", "strategy.name=lpa")
    model = build_model(config, 6)
    frozen = {"lpa": None, "dytox": ["backbone.encoder.blocks"]}[strategy]
    if frozen is None:
        assert build_strategy(config.strategy, model, device="cpu") is not None
    else:  # DyTox's freeze set on a model that is not DyTox names nothing at all
        with pytest.raises(ValueError, match="finetune.frozen: no parameter of TimmClassifier is under"):
            build_strategy("lpa", model, device="cpu", finetune={"frozen": frozen})
    with pytest.raises(ValueError, match="finetune.frozen: 'backbone.blocs' names nothing on the model"):
        build_strategy("lpa", model, device="cpu", finetune={"frozen": ["backbone.blocks", "backbone.blocs"]})


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["icarl", "der"])
def test_fixed_head_strategies_take_a_timm_model_apart(tmp_path, strategy):
    config = synthetic_config(tmp_path, f"model.name={VIT}", f"model.kwargs={TINY_VIT}", f"strategy.name={strategy}",
                              "data.n_experiences=2", name=strategy)
    results = run(config)
    assert len(results["accuracy_matrix"]) == 2 and len(results["locality"]["layers"][-1]) == 2
    state = torch.load(tmp_path / strategy / "model.pt", weights_only=True)
    assert state["classifier.weight"].shape == (4, 16)  # a fixed head over the 4 classes, on the timm features


@pytest.mark.slow
def test_resumed_timm_run_equals_the_uninterrupted_one_attention_maps_included(tmp_path):
    extra = (f"model.name={VIT}", f"model.kwargs={TINY_VIT}")
    straight = run(synthetic_config(tmp_path, *extra, name="straight"))
    config = synthetic_config(tmp_path, *extra, name="resumed")
    with pytest.raises(RunInterrupted):
        run(config, stop_after=1)
    assert len(json.loads((tmp_path / "resumed" / "attention_maps.json").read_text())["snapshots"]) == 1
    resumed = run(config, resume=True)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["locality"]["layers"] == straight["locality"]["layers"]
    maps = [json.loads((tmp_path / name / "attention_maps.json").read_text()) for name in ("straight", "resumed")]
    assert maps[0] == maps[1] and len(maps[0]["snapshots"]) == 3


@pytest.mark.slow
def test_compare_puts_our_models_and_a_timm_model_side_by_side(tmp_path):
    config = synthetic_config(tmp_path, "data.n_experiences=2", f"model.kwargs={TINY_VIT}", name="cmp")
    outcome = compare(config, models=("lpa", VIT), seeds=(1,), joint=True)
    folder = Path(outcome["folder"])
    assert f"| {VIT} / replay | 1 |" in outcome["table"] and "| lpa / replay | 1 |" in outcome["table"]
    timm_run = outcome["groups"][f"{VIT} / replay"]
    assert timm_run["incremental"][0]["model"] == VIT and outcome["groups"]["lpa / replay"]["incremental"][0][
        "model"] == "lpa_vit_tiny"
    assert all(step is not None for step in timm_run["joint"][0]["locality_at_milestones"]["layers"])
    assert (tmp_path / "cmp" / "timm-vit_tiny_patch16_224-replay-s1" / "attention_maps.png").is_file()
    assert _png_width(folder / "attention_maps.png") > _png_width(
        tmp_path / "cmp" / "lpa-replay-s1" / "attention_maps.png")  # both models in one figure


def test_timm_classifier_grows_its_head_and_is_measured_inside_strategies():
    benchmark = synthetic_benchmark(n_experiences=2, classes_per_experience=2, img_size=16, in_chans=3)
    kwargs = dict(img_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=3)
    model = timm_classifier("deit_tiny_patch16_224", head_type="per_experience", **kwargs)
    assert isinstance(model.classifier, PerExperienceHeads) and model.feature_extractor is model.backbone
    assert model.no_weight_decay() >= {"backbone.pos_embed", "backbone.cls_token"}
    evaluator = cil_evaluator(loggers=[], probe_size=8)
    strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=16, eval_mb_size=32, evaluator=evaluator)
    for experience in benchmark.train_stream:
        strategy.train(experience)
        result = strategy.eval(benchmark.test_stream)
    assert len(model.classifier.heads) == 2 and "Locality_Stream/eval_phase/test_stream/Layer01" in result
    maps = model.get_attention_maps(torch.randn(2, 3, 16, 16))
    assert [m.shape for m in maps] == [(2, 3, 16, 16)] * 2 and len(model.attention_layers()) == 2
    # iCaRL takes the model apart (feature_extractor + classifier) and the metric still finds the timm layers.
    fixed = timm_classifier("vit_tiny_patch16_224", num_classes=4, **kwargs)
    assert isinstance(fixed.classifier, nn.Linear)
    metric = LocalityPluginMetric(probe_size=8)
    icarl = ICaRL(feature_extractor=fixed.feature_extractor, classifier=fixed.classifier,
                  optimizer=torch.optim.Adam(fixed.parameters(), lr=1e-3), memory_size=8, buffer_transform=None,
                  fixed_memory=True, train_mb_size=16, eval_mb_size=32,
                  evaluator=cil_evaluator(loggers=[], extra_metrics=[metric], locality=False))
    icarl.train(benchmark.train_stream[0])
    icarl.eval(benchmark.test_stream)
    assert len(metric.result()) == 2
    assert isinstance(TimmClassifier(timm.create_model("vit_tiny_patch16_224", num_classes=0, **kwargs)).classifier,
                      GrowingClassifier)
