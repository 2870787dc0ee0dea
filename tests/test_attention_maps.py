"""The per-image attention maps (the teaser's data): plugin metric, JSON record and figure."""
import json
import pickle

import pytest
import torch
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_lpa.report import attention_comparison_figure, attention_maps_figure, plot_attention_maps
from avalanche_lpa.metrics import AttentionMapsPluginMetric, draw_probe, mean_attention_distance

from .conftest import make_tiny

BASE = "AttentionMaps/eval_phase/test_stream"


def _run(benchmark, metric, attn_type="lpa"):
    model = make_tiny(attn_type)
    strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=1, eval_mb_size=64,
                     evaluator=EvaluationPlugin(metric, loggers=[]))
    results = []
    for experience in benchmark.train_stream:
        strategy.train(experience)
        results.append(strategy.eval(benchmark.test_stream))
    return model, results


def test_snapshots_hold_the_query_maps_distances_and_probabilities(cil_benchmark):
    metric = AttentionMapsPluginMetric(num_images=4, seed=3)
    model, results = _run(cil_benchmark, metric)
    assert len(metric.snapshots) == 3 and [s["trained_experiences"] for s in metric.snapshots] == [1, 2, 3]
    probe, labels = draw_probe(cil_benchmark.test_stream[0], 4, 3)  # class-balanced, first experience
    assert metric.labels == labels.tolist() and sorted(metric.labels) == [0, 0, 1, 1]
    model.eval()
    with torch.no_grad():
        maps = model.get_attention_maps(probe)
        probs = model(probe).softmax(dim=-1)
    last = metric.snapshots[-1]
    assert last["query"] == (2, 2) and last["maps"].shape == (4, 2, 4, 4)  # [images, layers, rows, cols]
    for layer, attn in enumerate(maps):
        query_row = attn[:, :, 2 * 4 + 2].mean(dim=1).reshape(4, 4, 4)  # the centre patch's row, mean over heads
        assert torch.allclose(last["maps"][:, layer], query_row, atol=1e-6)
        per_image = torch.stack([mean_attention_distance(attn[k:k + 1], 4).mean() for k in range(4)])
        assert torch.allclose(last["layer_distances"][:, layer], per_image, atol=1e-5)
    assert torch.allclose(last["distance"], last["layer_distances"].mean(dim=1))
    assert torch.allclose(last["probability"], probs[torch.arange(4), labels], atol=1e-6)
    for k in range(4):
        assert results[-1][f"{BASE}/Image{k:02d}/Distance"] == pytest.approx(float(last["distance"][k]), abs=1e-6)
        assert results[-1][f"{BASE}/Image{k:02d}/Probability"] == pytest.approx(float(probs[k, labels[k]]), abs=1e-6)


@pytest.mark.slow
def test_record_survives_pickling_and_is_drawn_one_column_per_evaluation(cil_benchmark, tmp_path):
    metric = AttentionMapsPluginMetric(num_images=2, query=(0, 3))
    _run(cil_benchmark, metric, "mhsa")
    restored = pickle.loads(pickle.dumps(metric))  # as in a checkpoint
    assert restored.as_dict() == metric.as_dict()
    record = json.loads(json.dumps(metric.as_dict()))  # JSON-ready
    assert record["grid"] == [4, 4] and all(s["query"] == [0, 3] for s in record["snapshots"])
    assert torch.tensor(record["images"]).dtype == torch.int64 and torch.tensor(record["images"]).shape == (2, 1, 8, 8)
    (tmp_path / "attention_maps.json").write_text(json.dumps(record))
    figure = attention_maps_figure(tmp_path)
    assert len(figure.axes) == 2 * 3
    titles = [ax.get_title() for ax in figure.axes]
    first = record["snapshots"][0]
    assert titles[0] == f"after exp 1\nd={first['layer_distances'][0][-1]:.2f}  p={first['probability'][0]:.2f}"
    assert titles[3].startswith("d=")  # second row: no column header
    assert plot_attention_maps(tmp_path).name == "attention_maps.png"
    assert len(attention_comparison_figure({"a": tmp_path, "b": record}).axes) == 2 * 2 * 3


def test_other_streams_and_bad_arguments(cil_benchmark):
    with pytest.raises(ValueError, match="num_images"):
        AttentionMapsPluginMetric(num_images=0)
    metric = AttentionMapsPluginMetric(stream="train")  # records the train stream only
    _run(cil_benchmark, metric)
    assert metric.snapshots == [] and metric.result() is None
    with pytest.raises(ValueError, match=r"query patch \(5, 0\) is outside the 4x4 patch grid"):
        _run(cil_benchmark, AttentionMapsPluginMetric(query=(5, 0)))
