"""Locality metric: the distance on hand-built maps, the standalone metric, the probe and the plugin metric."""
import math
import pickle

import pytest
import torch
from avalanche.logging import TextLogger
from avalanche.training import ICaRL, Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_lpa.data import TargetTensorDataset
from avalanche_lpa.metrics import (
    LocalityPluginMetric,
    MeanAttentionDistance,
    attention_layers,
    class_balanced_indices,
    draw_probe,
    locality_metrics,
    mean_attention_distance,
)

from .conftest import make_tiny

BASE = "Locality_Stream/eval_phase/test_stream"


def _positions(rows, cols):
    return [(x, y) for y in range(rows) for x in range(cols)]  # row by row, as the patch tokens


# -- the distance on hand-built maps ---------------------------------------------------------------------------
def test_attention_on_self_has_zero_distance():
    attn = torch.eye(16).expand(2, 3, 16, 16)
    assert torch.equal(mean_attention_distance(attn, 4), torch.zeros(3))
    with pytest.raises(TypeError, match="takes attention maps .* for a model use measure_locality"):
        mean_attention_distance(torch.nn.Linear(2, 2))  # before: AttributeError: 'Linear' has no attribute 'dim'


@pytest.mark.parametrize("grid", [(4, 4), (3, 5)])
def test_uniform_attention_gives_the_average_pair_distance(grid):
    rows, cols = grid
    pos = _positions(rows, cols)
    n = len(pos)
    expected = sum(math.hypot(xj - xi, yj - yi) for xi, yi in pos for xj, yj in pos) / (n * n)
    attn = torch.full((2, n, n), 1.0 / n)  # [heads, N, N] without a batch dimension
    got = mean_attention_distance(attn, grid)
    assert got.shape == (2,)
    assert torch.allclose(got, torch.full((2,), expected), atol=1e-5)


def test_attention_on_a_fixed_offset_gives_its_length():
    rows = cols = 5
    pos = _positions(rows, cols)
    offsets = [(1, 0), (2, 1), (0, 0), (-1, -2)]  # |d| <= 2: one of +d, -d fits a 5-grid
    attn = torch.zeros(len(offsets), rows * cols, rows * cols)
    for h, (dx, dy) in enumerate(offsets):
        for i, (x, y) in enumerate(pos):
            # Near the border the patch at +offset does not exist; the mirrored one has the same length.
            tx = x + dx if 0 <= x + dx < cols else x - dx
            ty = y + dy if 0 <= y + dy < rows else y - dy
            attn[h, i, pos.index((tx, ty))] = 1.0
    expected = torch.tensor([math.hypot(dx, dy) for dx, dy in offsets])
    assert torch.allclose(mean_attention_distance(attn.unsqueeze(0), (rows, cols)), expected, atol=1e-6)


def test_distance_is_averaged_over_the_batch_and_the_grid_is_inferred():
    n = 9
    local = torch.eye(n)
    far = torch.zeros(n, n)
    far[:, 8] = 1.0  # every query looks at the bottom-right corner of a 3x3 grid
    expected_far = sum(math.hypot(2 - x, 2 - y) for x, y in _positions(3, 3)) / n
    attn = torch.stack([local, far]).unsqueeze(1)  # [B=2, H=1, N, N]
    assert torch.allclose(mean_attention_distance(attn), torch.tensor([expected_far / 2]), atol=1e-6)


def test_bad_shapes_and_grids_are_rejected():
    with pytest.raises(ValueError, match="square"):
        mean_attention_distance(torch.full((1, 6, 6), 1 / 6))
    with pytest.raises(ValueError, match="tokens"):
        mean_attention_distance(torch.full((1, 16, 16), 1 / 16), (3, 4))
    with pytest.raises(ValueError, match="expected attention"):
        mean_attention_distance(torch.ones(16, 16))


# -- standalone metric ---------------------------------------------------------------------------------------
def test_standalone_metric_weights_batches_by_their_size():
    metric = MeanAttentionDistance()
    assert metric.result() is None
    n = 16

    def uniform(batch):
        return torch.full((batch, 2, n, n), 1.0 / n)

    def local(batch):
        return torch.eye(n).expand(batch, 2, n, n)

    d = mean_attention_distance(uniform(1), 4)
    metric.update([uniform(3), local(3)], [4, 4])  # 3 images: layer 0 uniform, layer 1 on self
    metric.update([local(1), uniform(1)], [4, 4])  # 1 image: the other way round
    first, second = metric.result()
    assert torch.allclose(first, d * 3 / 4, atol=1e-6)
    assert torch.allclose(second, d / 4, atol=1e-6)
    with pytest.raises(ValueError, match="same batch"):
        metric.update([uniform(2), local(3)], [4, 4])
    with pytest.raises(ValueError, match="layers"):
        metric.update([uniform(2)], [4])
    metric.reset()
    assert metric.result() is None


@pytest.mark.parametrize("attn_type", ["lpa", "gpsa", "mhsa"])
def test_metric_on_a_model_matches_its_attention_maps(attn_type):
    model = make_tiny(attn_type).eval()
    x = torch.randn(5, 1, 8, 8)
    metric = MeanAttentionDistance()
    metric.update_from_model(model, x)
    maps = model.get_attention_maps(x)
    result = metric.result()
    assert len(result) == len(maps) == 2
    max_distance = math.hypot(3, 3)
    for got, attn in zip(result, maps):
        assert torch.allclose(got, mean_attention_distance(attn, 4), atol=1e-6)
        assert bool(((got > 0) & (got < max_distance)).all())
    assert all(layer.attention_map is None and not layer.record_attention for layer in attention_layers(model))


def test_metric_needs_attention_layers():
    with pytest.raises(ValueError, match="PatchAttention"):
        MeanAttentionDistance().update_from_model(nn.Linear(4, 4), torch.randn(2, 4))


# -- probe -----------------------------------------------------------------------------------------------------
def test_class_balanced_indices_spread_the_remainder_and_are_deterministic():
    labels = [0] * 10 + [1] * 10 + [2] * 2
    picked = class_balanced_indices(labels, 8, seed=3)
    counts = [sum(labels[i] == c for i in picked) for c in range(3)]
    assert len(picked) == 8 and counts[2] == 2 and sorted(counts[:2]) == [3, 3]
    assert picked == class_balanced_indices(labels, 8, seed=3)
    assert picked != class_balanced_indices(labels, 8, seed=4)
    assert class_balanced_indices(labels, 100) == list(range(22))


def test_probe_is_drawn_from_the_whole_stream_even_from_a_slice(cil_benchmark):
    images, labels = draw_probe(cil_benchmark.test_stream, size=12, seed=0)
    assert images.shape == (12, 1, 8, 8)
    assert torch.bincount(labels).tolist() == [2] * 6
    again, _ = draw_probe(cil_benchmark.test_stream, size=12, seed=0)
    assert torch.equal(images, again)
    plugin = LocalityPluginMetric(probe_size=12)
    model = make_tiny()
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
                     criterion=nn.CrossEntropyLoss(), eval_mb_size=64, evaluator=EvaluationPlugin(plugin, loggers=[]))
    strategy.eval(cil_benchmark.test_stream[:1])
    assert list(plugin.probes) == ["test"] and torch.equal(plugin.probes["test"], images)
    first = plugin.probes["test"]
    strategy.eval(cil_benchmark.test_stream)
    assert plugin.probes["test"] is first  # drawn once, reused after every experience
    restored = pickle.loads(pickle.dumps(plugin))  # as in a checkpoint: the images are not stored ...
    assert restored.probes == {}
    restored.probe_for(cil_benchmark.test_stream[0])
    assert torch.equal(restored.probes["test"], first)  # ... and come back identical


# -- plugin metric in strategies -------------------------------------------------------------------------------
def _train(strategy, benchmark):
    results = []
    for experience in benchmark.train_stream:
        strategy.train(experience)
        results.append(strategy.eval(benchmark.test_stream))
    return results


def _expected_keys(layers=2, heads=9):
    keys = {BASE} | {f"{BASE}/Layer{l:02d}" for l in range(layers)}
    return keys | {f"{BASE}/Layer{l:02d}/Head{h:02d}" for l in range(layers) for h in range(heads)}


@pytest.mark.parametrize("attn_type", ["lpa", "gpsa", "mhsa"])
def test_locality_keys_in_eval_results_and_text_log(attn_type, cil_benchmark, tmp_path):
    model = make_tiny(attn_type)
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        evaluator = EvaluationPlugin(*locality_metrics(probe_size=24), loggers=[TextLogger(handle)])
        strategy = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3),
                         criterion=nn.CrossEntropyLoss(), train_mb_size=16, train_epochs=1, eval_mb_size=64,
                         evaluator=evaluator)
        results = _train(strategy, cil_benchmark)
    for result in results:
        assert {k for k in result if k.startswith("Locality")} == _expected_keys()
    last = results[-1]
    plugin = evaluator.metrics[0]
    # The emitted values are the plugin's measurement on the fixed probe, recomputed here independently.
    probe, _ = draw_probe(cil_benchmark.test_stream, 24, 0)
    model.eval()
    with torch.no_grad():
        maps = model.get_attention_maps(probe)
    for layer, attn in enumerate(maps):
        heads = mean_attention_distance(attn, 4)
        assert last[f"{BASE}/Layer{layer:02d}"] == pytest.approx(float(heads.mean()), abs=1e-5)
        assert last[f"{BASE}/Layer{layer:02d}/Head03"] == pytest.approx(float(heads[3]), abs=1e-5)
        assert torch.allclose(plugin.result()[layer], heads, atol=1e-5)
    assert last[BASE] == pytest.approx(float(torch.cat([mean_attention_distance(a, 4) for a in maps]).mean()), abs=1e-5)
    text = log.read_text()
    assert f"{BASE}/Layer01/Head08 = " in text and f"{BASE} = " in text
    history = evaluator.get_all_metrics()
    assert len(history[f"{BASE}/Layer00"][1]) == 3  # one value per eval phase, none during training


def test_nothing_is_measured_during_training(cil_benchmark):
    model = make_tiny()
    plugin = LocalityPluginMetric(probe_size=8)
    evaluator = EvaluationPlugin(plugin, loggers=[])
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=16, evaluator=evaluator)
    strategy.train(cil_benchmark.train_stream[0])
    assert plugin.probes == {} and plugin.result() is None
    assert not any(k.startswith("Locality") for k in evaluator.get_all_metrics())


def test_modes_are_restored_and_no_gradients_are_made():
    model = make_tiny().train()
    model.backbone.blocks[0].eval()  # a submodule deliberately in eval mode must stay so
    plugin = LocalityPluginMetric()
    plugin.measure(model, torch.randn(10, 1, 8, 8), "cpu", batch_size=4)
    assert model.training and model.head.training and not model.backbone.blocks[0].training
    assert all(p.grad is None for p in model.parameters())
    assert len(plugin.result()) == 2


def test_user_probe_dataset_and_wrapped_model(cil_benchmark):
    data = TargetTensorDataset(torch.randn(40, 1, 8, 8), torch.arange(4).repeat(10))
    model = make_tiny()
    wrapped = nn.Sequential(nn.Identity(), model)
    evaluator = EvaluationPlugin(*locality_metrics(probe_size=16, probe_dataset=data, per_head=False), loggers=[])
    strategy = Naive(model=wrapped, optimizer=torch.optim.Adam(wrapped.parameters(), lr=1e-3),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=16, eval_mb_size=7, evaluator=evaluator)
    result = _train(strategy, cil_benchmark)[-1]
    assert {k for k in result if k.startswith("Locality")} == {BASE, f"{BASE}/Layer00", f"{BASE}/Layer01"}
    probe, labels = draw_probe(data, 16, 0)
    assert torch.bincount(labels).tolist() == [4] * 4
    model.eval()
    with torch.no_grad():
        expected = torch.cat([mean_attention_distance(a, 4) for a in model.get_attention_maps(probe)]).mean()
    assert result[BASE] == pytest.approx(float(expected), abs=1e-5)


def test_icarl_wrapped_model_is_measured(cil_benchmark):
    model = make_tiny(num_classes=6)
    evaluator = EvaluationPlugin(*locality_metrics(probe_size=12), loggers=[])
    strategy = ICaRL(feature_extractor=model.feature_extractor, classifier=model.classifier,
                     optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), memory_size=12, buffer_transform=None,
                     fixed_memory=True, train_mb_size=16, eval_mb_size=64, evaluator=evaluator)
    assert type(strategy.model).__name__ == "TrainEvalModel"
    results = _train(strategy, cil_benchmark)
    assert all(_expected_keys() <= set(r) for r in results)
    assert all(0.0 < r[BASE] < math.hypot(3, 3) for r in results)
