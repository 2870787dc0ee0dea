"""The memory batches of DER, ER-ACE and FeatureReplay: drawn from the seed and dealt over the processes as the
training batches are, so the processes' memory batches together are one process's (data.sharding.memory_loader,
installed by DistributedPlugin).

Two processes are simulated in one here (the plugin asked for rank ``r`` of 2, no process group): what each rank
reads does not depend on the others. ``tests/test_process_count.py`` runs DER and FeatureReplay under torchrun.
"""
from __future__ import annotations

from typing import List

import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import TensorDataset

from avalanche_lpa.data.sharding import SeededMemoryBatches, memory_loader
from avalanche_lpa.metrics.cil import cil_evaluator
from avalanche_lpa.plugins import DistributedPlugin
from avalanche_lpa.plugins import distributed as distributed_plugin
from avalanche_lpa.training import build_strategy

from .conftest import make_tiny


def test_two_processes_memory_batches_are_the_memory_batches_of_one_process():
    one = SeededMemoryBatches(20, 6, rank=0, world_size=1, seed=4)
    halves = [SeededMemoryBatches(20, 3, rank=r, world_size=2, seed=4) for r in range(2)]
    for _ in range(3):  # three passes over the memory
        first, parts = list(one), [list(h) for h in halves]
        assert len(first) == len(parts[0]) == len(parts[1]) == len(one) == 3  # full global batches of 6 only
        assert [sorted(a + b) for a, b in zip(*parts)] == [sorted(batch) for batch in first]
        assert not set(parts[0][0]) & set(parts[1][0])
        assert len({i for batch in first for i in batch}) == 18  # a permutation: no sample twice in a pass
    assert list(SeededMemoryBatches(20, 6, rank=0, world_size=1, seed=4)) != first  # each pass its own order
    assert list(SeededMemoryBatches(20, 6, rank=0, world_size=1, seed=5)) != list(
        SeededMemoryBatches(20, 6, rank=0, world_size=1, seed=4))


def test_a_memory_smaller_than_one_global_memory_batch_gives_no_memory_loader():
    memory = TensorDataset(torch.arange(10.0))
    assert memory_loader(memory, 6, rank=0, world_size=2, seed=0) is None  # 10 < 12: no replay yet, as Avalanche
    batches = memory_loader(memory, 5, rank=1, world_size=2, seed=0)
    assert [len(next(batches)[0]) for _ in range(3)] == [5, 5, 5]  # endless: one global batch of 10 per pass


def _memory_batches(cil_benchmark, monkeypatch, name: str, rank: int, world_size: int, batch: int,
                    global_seed: int = 0) -> List[List[float]]:
    """The memory samples (their pixel sums) of every iteration of the second experience, as rank ``rank`` of
    ``world_size`` reads them with training batch ``batch`` and memory batch ``batch``."""
    monkeypatch.setattr(distributed_plugin, "distributed_rank", lambda: (rank, world_size))
    seen: List[List[float]] = []

    class Record(SupervisedPlugin):
        def after_forward(self, strategy, **kwargs):
            if strategy.clock.train_exp_counter == 1:
                memory = strategy.mbatch[0][:batch] if name == "der" else strategy.mb_buffer_x
                seen.append(sorted(round(float(x.sum()), 4) for x in memory))

    head = {"num_classes": 6} if name == "der" else {}
    strategy = build_strategy(name, make_tiny(**head), evaluator=cil_evaluator(loggers=[], locality=False),
                              device="cpu", plugins=[Record(), DistributedPlugin(seed=3)], train_mb_size=batch,
                              batch_size_mem=batch, train_epochs=1, mem_size=12)
    torch.manual_seed(global_seed)
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    return seen


@pytest.mark.parametrize("name", ["der", "er_ace"])
def test_each_process_reads_its_part_of_one_process_memory_batches(cil_benchmark, monkeypatch, name):
    """Rank 0 and rank 1 of 2 with memory batch 3 read, at every iteration, the two halves of what one process with
    memory batch 6 reads (Avalanche's own loaders shuffle from the random state, the same in both ranks here: the
    ranks read the same samples, which fails this test); DER's whatever the global random state before training."""
    one = _memory_batches(cil_benchmark, monkeypatch, name, rank=0, world_size=1, batch=6)
    halves = [_memory_batches(cil_benchmark, monkeypatch, name, rank=r, world_size=2, batch=3) for r in range(2)]
    assert len(one) == len(halves[0]) == len(halves[1]) == 11  # 64 images, batches of 6 (the last of 4)
    assert [sorted(a + b) for a, b in zip(*halves)] == one
    if name == "der":  # ER-ACE fills its memory before the first epoch, from the random state the run starts with
        assert _memory_batches(cil_benchmark, monkeypatch, name, rank=0, world_size=1, batch=6, global_seed=1) == one
