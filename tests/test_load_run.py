"""avalanche_lpa.load_run: a finished run's model, built from its own config, scores what the run reported."""
import json

import pytest
import torch

import avalanche_lpa
from avalanche_lpa.config import ConfigError
from avalanche_lpa.runner.benchmark import build_benchmark
from avalanche_lpa.runner import run

from .test_experiment import synthetic_config

RUNS = {
    "lpa": ("strategy.name=lpa", "model.head=per_experience", "strategy.epochs_first=1", "strategy.finetune.epochs=1",
            "strategy.lr_schedule.schedule_epochs=null", "strategy.lr_schedule.warmup_epochs=0"),
    "dytox": ("strategy.name=dytox", "strategy.epochs_first=1", "strategy.finetune.epochs=1",
              "strategy.lr_schedule.schedule_epochs=null", "strategy.lr_schedule.warmup_epochs=0"),
    "timm": ("model.name=timm:vit_tiny_patch16_224", "model.kwargs={embed_dim: 16, depth: 2, num_heads: 2}"),
}


def _accuracy(model: torch.nn.Module, benchmark) -> float:
    correct = total = 0
    with torch.no_grad():
        for experience in benchmark.test_stream:
            for x, y, *_ in torch.utils.data.DataLoader(experience.dataset, batch_size=64):
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
    return correct / total


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(RUNS))
def test_load_run_gives_the_trained_model_of_lpa_dytox_and_timm_runs(kind, tmp_path):
    config = synthetic_config(tmp_path, "data.n_experiences=2", *RUNS[kind], name=kind)
    results = run(config)
    loaded = avalanche_lpa.load_run(tmp_path / kind)
    assert not loaded.model.training and loaded.results["summary"] == results["summary"]
    assert loaded.class_order == json.loads((tmp_path / kind / "classes.json").read_text())["class_order"]
    assert loaded.config == config  # the run's own validated config
    saved = torch.load(tmp_path / kind / "model.pt", weights_only=True)
    state = loaded.model.state_dict()
    assert saved.keys() == state.keys() and all(torch.equal(saved[k], state[k]) for k in saved)
    # the loaded model scores on the test stream exactly what the run reported after its last experience
    benchmark = build_benchmark(loaded.config.data, loaded.config.seed)
    assert _accuracy(loaded.model, benchmark) == pytest.approx(results["summary"]["last_accuracy"], abs=1e-6)


def test_load_run_names_a_missing_or_damaged_file(tmp_path):
    with pytest.raises(ConfigError, match="is not a finished run \\(config.yaml missing\\)"):
        avalanche_lpa.load_run(tmp_path)
    config = synthetic_config(tmp_path, "data.n_experiences=2", name="run")
    run(config)
    (tmp_path / "run" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"model.pt is not a state dict of this run's model") as info:
        avalanche_lpa.load_run(tmp_path / "run")
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_timm_run_on_an_image_folder_loads_without_the_images(tmp_path):
    # The run measured the image size from the folder (data.folder.img_size: null); load_run used to measure it
    # again, so a moved or changed folder failed (or built another size). classes.json now records it.
    import shutil

    from .test_folder_dataset import folder_overrides, make_image_folder

    root = make_image_folder(tmp_path / "images", size=(16, 16))
    config = synthetic_config(tmp_path, *folder_overrides(root), "model.overrides={}",
                              "model.name=timm:vit_tiny_patch16_224", "model.kwargs={embed_dim: 16, depth: 1, num_heads: 2}",
                              "strategy.train_epochs=1", name="folder")
    run(config)
    assert json.loads((tmp_path / "folder" / "classes.json").read_text())["image_shape"] == [3, 16, 16]
    shutil.rmtree(root)
    loaded = avalanche_lpa.load_run(tmp_path / "folder")
    assert loaded.config == config and loaded.model(torch.zeros(1, 3, 16, 16)).shape[0] == 1
