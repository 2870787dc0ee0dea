"""Memory scopes named for what they do (issue 29.1), each process simulated in one: ``global`` (one memory, the
eval transform), ``rank_shard`` (each rank herds from its own shard: Douillard's), ``rank_augmented`` (each rank
herds from the whole experience on its own augmentations: the LPA authors' two-GPU runs); ``per_rank`` reads as
``rank_shard``."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from avalanche_lpa.config import load_config
from avalanche_lpa.data import TargetTensorDataset, class_incremental_split
from avalanche_lpa.plugins import herding as herding_module
from avalanche_lpa.plugins.herding import HerdingMemory


class Features(nn.Module):
    """``backbone`` features: the images themselves, flattened (herding then picks by pixel values)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Flatten()

    def forward(self, x):
        return self.backbone(x)


def experience_data():
    torch.manual_seed(0)
    images = torch.randn(40, 1, 4, 4)
    labels = torch.arange(2).repeat_interleave(20)
    noisy = lambda x: x + 0.05 * torch.randn_like(x)  # noqa: E731 (the training transform: a random augmentation)
    benchmark = class_incremental_split(TargetTensorDataset(images, labels), TargetTensorDataset(images, labels), 1,
                                        [0, 1], 0, train_transform=noisy, eval_transform=None)
    return benchmark.train_stream[0].dataset, images


def memory_of(scope, rank, world_size, monkeypatch):
    monkeypatch.setattr(herding_module, "distributed_rank", lambda: (rank, world_size))
    data, images = experience_data()
    strategy = SimpleNamespace(model=Features(), eval_mb_size=16, device="cpu", experience=SimpleNamespace(dataset=data),
                               clock=SimpleNamespace(train_exp_counter=0))
    memory = HerdingMemory(10, scope=scope)
    torch.manual_seed(1993)  # the run's seed
    state = torch.get_rng_state()
    memory.update(strategy)
    if scope == "rank_augmented":  # its own augmentations leave the training stream's random state alone
        assert torch.equal(torch.get_rng_state(), state)
    picked = [x for x, *_ in memory.buffer.eval()]
    return {next(i for i, image in enumerate(images) if torch.equal(image, x)) for x in picked}


def test_the_three_scopes_under_two_simulated_ranks(monkeypatch):
    glob = [memory_of("global", rank, 2, monkeypatch) for rank in (0, 1)]
    shard = [memory_of("rank_shard", rank, 2, monkeypatch) for rank in (0, 1)]
    augmented = [memory_of("rank_augmented", rank, 2, monkeypatch) for rank in (0, 1)]
    assert glob[0] == glob[1] and len(glob[0]) == 10  # one memory, identical on every rank
    assert shard[0].isdisjoint(shard[1]) and len(shard[0] | shard[1]) == 20  # disjoint shards: 2 x mem_size
    assert augmented[0] != augmented[1]  # each rank's own augmentations pick its own exemplars ...
    assert all(len(m) == 10 for m in augmented) and 10 < len(augmented[0] | augmented[1]) < 20  # ... overlapping
    assert not all(i < 20 for i in augmented[0] | augmented[1])  # drawn from the whole experience
    assert memory_of("rank_augmented", 1, 2, monkeypatch) == augmented[1]  # seeded: the same picks again
    assert memory_of("global", 0, 1, monkeypatch) == glob[0]  # one process: global is global


def test_per_rank_reads_as_rank_shard(monkeypatch):
    assert HerdingMemory(10, scope="per_rank").scope == "rank_shard"
    assert memory_of("per_rank", 0, 2, monkeypatch) == memory_of("rank_shard", 0, 2, monkeypatch)
    config = load_config(None, ["strategy.name=lpa", "strategy.memory_scope=per_rank"])
    assert config.strategy["memory_scope"] == "rank_shard"
    with pytest.raises(ValueError, match="memory_scope must be one of global, rank_shard, rank_augmented"):
        HerdingMemory(10, scope="everywhere")


def test_the_shard_permutation_comes_from_the_run_seed_unless_given():
    from avalanche_lpa.plugins import herding_memory

    torch.manual_seed(1993)
    assert herding_memory(10, scope="rank_shard").seed == 1993  # the runner seeds torch before building
    torch.manual_seed(7)
    assert herding_memory(10, scope="rank_shard").seed == 7
    assert herding_memory(10, scope="rank_shard", seed=3).seed == 3
