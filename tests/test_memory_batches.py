"""The memory batches of DER, ER-ACE and FeatureReplay and A-GEM's reference samples: drawn from the seed and dealt
over the processes as the training batches are, so the processes' memory batches together are one process's
(data.memory_batches, installed by DistributedPlugin).

Two processes are simulated in one here (the plugin asked for rank ``r`` of 2, no process group): what each rank
reads does not depend on the others. ``tests/test_process_count.py`` runs DER, FeatureReplay and A-GEM under torchrun.
"""
from __future__ import annotations

import pickle
from typing import List

import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import TensorDataset

from avalanche_lpa.data.memory_batches import MemoryBatches, MemoryStream, ReferenceSamples, memory_loader
from avalanche_lpa.metrics.cil import cil_evaluator
from avalanche_lpa.plugins import DistributedPlugin
from avalanche_lpa.plugins import distributed as distributed_plugin
from avalanche_lpa.training import build_strategy

from .conftest import make_tiny


def _values(batch) -> List[int]:
    return sorted(int(v) for v in batch[0])


def test_a_memory_stream_is_one_permutation_after_another_from_the_seed():
    stream = MemoryStream(5, seed=4)
    first, second = stream.take(3) + stream.take(2), stream.take(5)
    assert sorted(first) == sorted(second) == [0, 1, 2, 3, 4] and first != second  # each pass its own order
    assert MemoryStream(5, seed=4).take(12)[:10] == first + second  # one take runs into the next pass
    assert MemoryStream(5, seed=5).take(10) != first + second
    with pytest.raises(ValueError, match="at least one sample"):
        MemoryStream(0, seed=0)


def test_two_processes_memory_batches_are_the_memory_batches_of_one_process():
    memory = TensorDataset(torch.arange(20))
    one = MemoryBatches(memory, 6, rank=0, world_size=1, seed=4)
    halves = [MemoryBatches(memory, 3, rank=r, world_size=2, seed=4) for r in range(2)]
    for _ in range(8):  # 48 samples: more than two passes over the memory
        parts = [_values(next(h)) for h in halves]
        assert sorted(parts[0] + parts[1]) == _values(next(one))
        assert len(parts[0]) == len(parts[1]) == 3


def test_a_pickled_memory_loader_goes_on_with_the_next_batch():
    loader = MemoryBatches(TensorDataset(torch.arange(10)), 4, rank=0, world_size=1, seed=0)
    next(loader)
    copy = pickle.loads(pickle.dumps(loader))
    assert [_values(next(copy)) for _ in range(4)] == [_values(next(loader)) for _ in range(4)]


def test_a_memory_smaller_than_one_global_memory_batch_gives_no_memory_loader():
    memory = TensorDataset(torch.arange(10))
    assert memory_loader(memory, 6, rank=0, world_size=2, seed=0) is None  # 10 < 12: no replay yet, as Avalanche
    assert len(_values(next(memory_loader(memory, 5, rank=1, world_size=2, seed=0)))) == 5


def test_reference_samples_spread_over_the_experiences_and_dealt_over_the_processes():
    memories = [TensorDataset(torch.arange(0, 4)), TensorDataset(torch.arange(100, 110)),
                TensorDataset(torch.arange(200, 210))]
    one = ReferenceSamples(memories, 8, rank=0, world_size=1, seed=1)
    halves = [ReferenceSamples(memories, 4, rank=r, world_size=2, seed=1) for r in range(2)]
    for _ in range(3):
        first = _values(next(one))
        assert [sum(1 for v in first if lo <= v < lo + 100) for lo in (0, 100, 200)] == [3, 3, 2]  # 8 over 3
        parts = [_values(next(h)) for h in halves]
        assert sorted(parts[0] + parts[1]) == first and len(parts[0]) == len(parts[1]) == 4


def _memory_batches(cil_benchmark, monkeypatch, name: str, rank: int, world_size: int, batch: int,
                    global_seed: int = 0) -> List[List[float]]:
    """The memory samples (their pixel sums) of every iteration of the last of three experiences, as rank ``rank``
    of ``world_size`` reads them with training batch ``batch`` and memory batch (A-GEM: reference batch) ``batch``."""
    monkeypatch.setattr(distributed_plugin, "distributed_rank", lambda: (rank, world_size))
    seen: List[List[float]] = []

    def record(memory):
        seen.append(sorted(round(float(x.sum()), 4) for x in memory))

    class Record(SupervisedPlugin):
        def after_forward(self, strategy, **kwargs):
            if strategy.clock.train_exp_counter == 2 and name != "agem":
                record(strategy.mbatch[0][:batch] if name == "der" else strategy.mb_buffer_x)

    head = {"num_classes": 6} if name == "der" else {}
    options = dict(patterns_per_exp=12, sample_size=batch) if name == "agem" else dict(batch_size_mem=batch,
                                                                                       mem_size=12)
    strategy = build_strategy(name, make_tiny(**head), evaluator=cil_evaluator(loggers=[], locality=False),
                              device="cpu", plugins=[Record(), DistributedPlugin(seed=3)], train_mb_size=batch,
                              train_epochs=1, **options)
    torch.manual_seed(global_seed)
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    if name == "agem":  # its reference samples, drawn before every iteration
        agem = next(p for p in strategy.plugins if hasattr(p, "sample_from_memory"))
        sample = agem.sample_from_memory

        def recorded():
            drawn = sample()
            record(drawn[0])
            return drawn

        agem.sample_from_memory = recorded
    strategy.train(cil_benchmark.train_stream[2])
    return seen


@pytest.mark.parametrize("name", ["der", "er_ace", "agem"])
def test_each_process_reads_its_part_of_one_process_memory_batches(cil_benchmark, monkeypatch, name):
    """Rank 0 and rank 1 of 2 with memory batch 3 read, at every iteration, the two halves of what one process with
    memory batch 6 reads (Avalanche's own loaders shuffle from the random state, the same in both ranks here, or
    read in order: the ranks read the same samples, which fails this test); DER's and A-GEM's whatever the global
    random state before training."""
    one = _memory_batches(cil_benchmark, monkeypatch, name, rank=0, world_size=1, batch=6)
    halves = [_memory_batches(cil_benchmark, monkeypatch, name, rank=r, world_size=2, batch=3) for r in range(2)]
    assert len(one) == len(halves[0]) == len(halves[1]) == 11  # 64 images, batches of 6 (the last of 4)
    assert [sorted(a + b) for a, b in zip(*halves)] == one
    if name != "er_ace":  # ER-ACE fills its memory before the first epoch, from the random state the run starts with
        assert _memory_batches(cil_benchmark, monkeypatch, name, rank=0, world_size=1, batch=6, global_seed=1) == one
