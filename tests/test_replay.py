"""Replay by concatenation, repeated augmentation and the authors' herding memory."""
from collections import Counter, OrderedDict
from types import SimpleNamespace

import pytest
import torch
from avalanche.benchmarks import nc_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.training import Naive
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from avalanche_lpa.data import TargetTensorDataset, synthetic_benchmark
from avalanche_lpa.plugins import (
    ConcatReplayPlugin,
    HerdingMemory,
    RepeatedAugmentationPlugin,
    RepeatedAugmentationSampler,
    herding_memory,
    icarl_herding_order,
)

from .conftest import make_tiny


def _naive(model, plugins, batch=16, epochs=1):
    return Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.01), criterion=nn.CrossEntropyLoss(),
                 train_mb_size=batch, train_epochs=epochs, device="cpu", evaluator=EvaluationPlugin(loggers=[]),
                 plugins=plugins)


class LabelCounter(SupervisedPlugin):
    def __init__(self):
        super().__init__()
        self.labels = {}

    def before_training_iteration(self, strategy, **kwargs):
        self.labels.setdefault(strategy.clock.train_exp_counter, []).extend(strategy.mb_y.tolist())


# ----------------------------------------------------------------------------------------- concatenation
def test_concat_replay_draws_memory_in_proportion_and_keeps_memory_bounded_and_balanced():
    bench = synthetic_benchmark(n_experiences=3, classes_per_experience=2, img_size=8, in_chans=1, train_per_class=150)
    memory = herding_memory(60)
    counter = LabelCounter()
    strategy = _naive(make_tiny(), [ConcatReplayPlugin(memory), counter], batch=20, epochs=2)
    for exp, experience in enumerate(bench.train_stream):
        strategy.train(experience)
        counts = Counter(int(t) for t in memory.buffer.targets)
        seen = 2 * (exp + 1)
        assert len(memory.buffer) <= 60 and len(counts) == seen
        assert set(counts.values()) == {60 // seen}  # equal share, remainder unused (as the authors')
    for exp in (1, 2):
        labels = counter.labels[exp]
        old = sum(1 for y in labels if y < 2 * exp)
        # 60 memory samples next to 300 new ones, drawn by one shuffled loader (2 epochs): 1/6 of the draws.
        assert len(labels) == 2 * 360 and old == 2 * 60


# ---------------------------------------------------------------------------------- repeated augmentation
def test_repeated_augmentation_every_drawn_index_three_times_epoch_multiple_of_global_batch():
    sampler = RepeatedAugmentationSampler(100, repeats=3, multiple_of=16, seed=5)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == 96  # 100 truncated to a multiple of the batch
    counts = Counter(drawn)
    assert set(counts.values()) == {3} and len(counts) == 32
    assert drawn[:3] == [drawn[0]] * 3  # the copies of an image are consecutive (one process)
    sampler.set_epoch(1)
    assert list(sampler) != drawn  # a new order every epoch
    # An epoch keeps the usual length: a third of the images, each three times (DeiT's RASampler).
    full = RepeatedAugmentationSampler(30, repeats=3, multiple_of=1)
    assert len(list(full)) == 30 and set(Counter(full).values()) == {3} and len(set(full)) == 10


def test_repeated_augmentation_shards_of_two_ranks_are_disjoint_and_cover_the_epoch():
    shards = [list(RepeatedAugmentationSampler(100, repeats=3, num_replicas=2, rank=r, multiple_of=32, seed=1))
              for r in (0, 1)]
    single = RepeatedAugmentationSampler(100, repeats=3, num_replicas=1, multiple_of=32, seed=1)
    assert len(shards[0]) == len(shards[1]) == 48
    # The two ranks together read the first 96 slots of the one-process order, dealt round robin.
    dealt = [shards[i % 2][i // 2] for i in range(96)]
    assert dealt == list(single)[:96]
    # Copies of one image go to different ranks (DeiT's point of sharding after repeating).
    first = list(single)[0]
    assert first in shards[0] and first in shards[1]


def test_repeated_augmentation_plugin_installs_its_loader(cil_benchmark):
    counter = LabelCounter()
    sizes = []

    class LoaderProbe(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            sizes.append((len(strategy.dataloader), type(strategy.dataloader.sampler).__name__))

    strategy = _naive(make_tiny(), [RepeatedAugmentationPlugin(3), counter, LoaderProbe()], batch=16, epochs=2)
    strategy.train(cil_benchmark.train_stream[0])  # 64 images: 4 full batches per epoch
    assert sizes == [(4, "RepeatedAugmentationSampler")] * 2
    assert len(counter.labels[0]) == 2 * 64


def test_our_loaders_keep_the_strategys_workers_and_make_them_persistent(cil_benchmark):
    """Workers start once per experience, not every epoch; finetuning loads with them, not in the main process."""
    from torch.utils.data import DataLoader

    from avalanche_lpa.plugins import BalancedFinetuningPlugin

    loaders = []

    class LoaderProbe(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            loaders.append(strategy.dataloader)

    strategy = _naive(make_tiny(), [RepeatedAugmentationPlugin(3), LoaderProbe()], batch=16, epochs=2)
    strategy.train(cil_benchmark.train_stream[0], num_workers=1)
    assert loaders[0] is loaders[1]  # one loader per experience, its worker kept over the epochs
    assert (loaders[0].num_workers, loaders[0].persistent_workers) == (1, True)
    strategy.train(cil_benchmark.train_stream[1])  # no workers: nothing to keep
    assert (loaders[-1].num_workers, loaders[-1].persistent_workers) == (0, False)

    data = cil_benchmark.train_stream[0].dataset
    finetune = BalancedFinetuningPlugin(SimpleNamespace(buffer=data), epochs=1)
    training = SimpleNamespace(train_mb_size=16, dataloader=DataLoader(data, num_workers=2))
    loader = finetune._loader(training, data, experience=1)
    assert (loader.num_workers, loader.persistent_workers) == (2, True)


# ------------------------------------------------------------------------------------------ herding memory
def _icarl_by_hand(rows, count, cap=1000):
    """The authors' icarl_selection, transcribed with plain Python lists."""
    dims = range(len(rows[0]))
    norms = [sum(v * v for v in r) ** 0.5 for r in rows]
    data = [[v / n for v in r] for r, n in zip(rows, norms)]
    mu = [sum(r[d] for r in data) / len(data) for d in dims]
    w, rank, picks, steps = list(mu), {}, 0, 0
    while len(rank) != min(count, len(data)) and steps < cap:
        scores = [sum(w[d] * r[d] for d in dims) for r in data]
        best = max(range(len(data)), key=lambda i: (scores[i], -i))
        steps += 1
        if best not in rank:
            rank[best] = picks
            picks += 1
        w = [w[d] + mu[d] - data[best][d] for d in dims]
    return sorted(rank, key=rank.get)


def test_icarl_herding_order_matches_the_authors_algorithm():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(40, 5, generator=generator)
    normalized = torch.nn.functional.normalize(features, dim=1)
    for count in (1, 7, 20):
        order = icarl_herding_order(normalized, count)
        assert order[:count] == _icarl_by_hand(features.tolist(), count)
        assert sorted(order) == list(range(40))  # the rest follows in index order


def _feature_experiences():
    """Two experiences of two classes each; the 'model' returns the 2-D inputs as features."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(80, 2, generator=generator) + torch.arange(4).repeat_interleave(20)[:, None] * 3.0
    y = torch.arange(4).repeat_interleave(20)
    data = TargetTensorDataset(x, y)
    return nc_benchmark(data, data, n_experiences=2, task_labels=False, fixed_class_order=[0, 1, 2, 3]).train_stream


def test_herding_memory_herds_new_classes_once_and_cuts_old_ones_to_their_first_exemplars():
    model = nn.Sequential(OrderedDict(backbone=nn.Identity(), head=nn.Linear(2, 4)))
    memory = HerdingMemory(12, normalize=True)
    stream = _feature_experiences()
    agent = SimpleNamespace(model=model, eval_mb_size=8, device="cpu", experience=stream[0])
    memory.post_adapt(agent, stream[0])
    first = {g: [tuple(x.tolist()) for x, *_ in buf.buffer] for g, buf in memory.buffer_groups.items()}
    assert {g: len(v) for g, v in first.items()} == {0: 6, 1: 6}
    data = stream[0].dataset
    for label in (0, 1):
        members = [i for i, t in enumerate(data.targets) if int(t) == label]
        rows = [data[i][0].tolist() for i in members]
        picked = _icarl_by_hand(rows, 6)
        assert first[label] == [tuple(rows[i]) for i in picked]
    # Experience 2: 4 classes share 12 -> 3 each; the old classes keep their first 3 in the stored order.
    agent.experience = stream[1]
    memory.post_adapt(agent, stream[1])
    second = {g: [tuple(x.tolist()) for x, *_ in buf.buffer] for g, buf in memory.buffer_groups.items()}
    assert {g: len(v) for g, v in second.items()} == {0: 3, 1: 3, 2: 3, 3: 3}
    assert second[0] == first[0][:3] and second[1] == first[1][:3]
    assert len(memory.buffer) == 12
    with pytest.raises(ValueError, match="positive"):
        HerdingMemory(0)
