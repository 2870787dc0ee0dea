"""Multi-process training: 2 CPU processes (gloo) under torchrun, and the single-process behaviour of the API.

The torchrun job (``tests/distributed_worker.py``) runs once per session; see its docstring for the three runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch
from avalanche.benchmarks.utils.data_loader import TaskBalancedDataLoader
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

from avalanche_lpa.data.sharding import shard_indices, shard_loader
from avalanche_lpa.distributed import DistInfo, init_distributed, main_process_loggers, on_main, shutdown_distributed
from avalanche_lpa.metrics.cil import cil_evaluator
from avalanche_lpa.plugins import DistributedPlugin
from avalanche_lpa.training import build_strategy

from .conftest import make_tiny
from .processes import free_port

# The tests that read the torchrun job take tens of seconds (marked slow: `pytest -m "not slow"` skips them).

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
TIMEOUT_S = 240  # the job takes ~20 s on 2 cores; the limit only stops a hung collective from hanging the suite
DDP_RUNS = ("replay", "naive_new_api")



@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Dict[str, Any]:
    out = tmp_path_factory.mktemp("ddp")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        str(WORKER), str(out),
    ]  # fmt: skip
    # Own session: on a timeout the whole group (launcher and workers) is killed, nothing else.
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"torchrun job did not finish in {TIMEOUT_S} s:\n{log.decode(errors='replace')[-4000:]}")
    text = log.decode(errors="replace")
    assert proc.returncode == 0, f"torchrun job failed (exit {proc.returncode}):\n{text[-6000:]}"
    status = [json.loads((out / "status" / f"rank{r}.json").read_text()) for r in range(2)]
    return dict(out=out, status=status, log=text)


def _pair(job: Dict[str, Any], run: str) -> List[Dict[str, Any]]:
    return [job["status"][r][run] for r in range(2)]


@pytest.mark.slow
def test_training_completes_on_both_ranks(job):
    assert [(s["rank"], s["world_size"], s["is_main"]) for s in job["status"]] == [(0, 2, True), (1, 2, False)]
    for run in DDP_RUNS + ("control",):
        for rank in _pair(job, run):
            assert len(rank["summary"]["accuracy_matrix"]) == 2  # evaluated after both experiences


@pytest.mark.slow
@pytest.mark.parametrize("run", DDP_RUNS)
def test_model_is_ddp_wrapped_and_rewrapped_after_the_head_grows(job, run):
    for rank in _pair(job, run):
        assert rank["wrapped"] and all(rank["wrapped"])
        assert rank["wraps"] == 2  # one wrapper per experience
        assert sorted(set(rank["head_units"])) == [2, 4]  # the head grew for experience 2 ...
        assert all(rank["head_in_optimizer"])  # ... and the optimizer steps the wrapped, grown head
        assert rank["attention_maps"] == [[1, 9, 16, 16]] * 2  # get_attention_maps through the wrapper


@pytest.mark.slow
@pytest.mark.parametrize("run", DDP_RUNS)
def test_gradients_are_synchronised(job, run):
    rank0, rank1 = _pair(job, run)
    # Each rank trains on different samples; only averaged gradients keep the parameters equal after every step.
    assert len(rank0["fingerprints"]) == len(rank1["fingerprints"]) > 0
    for step, (a, b) in enumerate(zip(rank0["fingerprints"], rank1["fingerprints"])):
        assert a == b, f"parameters differ between ranks after optimizer step {step}"
    assert rank0["final_fingerprint"] == rank1["final_fingerprint"]


@pytest.mark.slow
@pytest.mark.parametrize("run", DDP_RUNS)
def test_training_data_is_sharded_and_reshuffled(job, run):
    rank0, rank1 = _pair(job, run)
    assert rank0["samples"].keys() == rank1["samples"].keys() == {"0/0", "0/1", "1/0", "1/1"}
    first = "0/0"  # no replay memory yet: each rank reads half of experience 0, the two halves disjoint
    assert len(rank0["samples"][first]) == len(rank1["samples"][first]) == rank0["train_sizes"][0] // 2
    assert not set(rank0["samples"][first]) & set(rank1["samples"][first])
    for key in rank0["samples"]:
        assert len(rank0["samples"][key]) == len(rank1["samples"][key])  # equal shards: no rank waits forever
    assert set(rank0["samples"]["0/0"]) != set(rank0["samples"]["0/1"])  # a new shard every epoch


@pytest.mark.slow
@pytest.mark.parametrize("run", DDP_RUNS)
def test_ranks_agree_on_metrics(job, run):
    rank0, rank1 = _pair(job, run)
    assert rank0["eval_samples"] == rank1["eval_samples"] == 2 * rank0["test_size"]  # whole stream, twice
    assert rank0["metrics"] == rank1["metrics"]
    assert any(name.startswith("Locality_Stream") for name in rank0["metrics"])
    assert rank0["summary"] == rank1["summary"]


@pytest.mark.slow
@pytest.mark.parametrize("run", DDP_RUNS)
def test_each_rank_draws_random_numbers_of_its_own_in_an_epoch(job, run):
    """Augmentation, mixup and drop path draw from the global random state: seeded per rank at every epoch (as the
    authors' runs seed each rank), the processes' k-th images are not augmented alike."""
    rank0, rank1 = _pair(job, run)
    assert len(rank0["draws"]) == len(rank1["draws"]) > 0
    assert not set(rank0["draws"]) & set(rank1["draws"])
    control = _pair(job, "control")  # stock avalanche-lib: one seed, one state, the same draws in every rank
    assert control[0]["draws"] == control[1]["draws"]


@pytest.mark.slow
def test_only_rank_0_writes_results(job):
    results = job["out"] / "results"
    assert sorted(p.name for p in results.iterdir()) == [f"{run}.json" for run in sorted(DDP_RUNS)]
    for run in DDP_RUNS:
        written = json.loads((results / f"{run}.json").read_text())
        assert written["written_by_rank"] == 0
        assert written["summary"] == job["status"][0][run]["summary"]


@pytest.mark.slow
def test_control_without_the_plugin_fails_these_checks(job):
    """Stock avalanche-lib 0.6: no DDP, every rank its own model, each evaluates half the test set."""
    rank0, rank1 = _pair(job, "control")
    assert not any(rank0["wrapped"])
    assert rank0["fingerprints"][-1] != rank1["fingerprints"][-1]
    assert rank0["eval_samples"] == rank0["test_size"]  # half of the stream, twice
    assert rank0["samples"]["0/0"] == rank0["samples"]["0/1"]  # same order every epoch
    assert rank0["metrics"] != rank1["metrics"]


@pytest.mark.slow
def test_memory_scope_global_is_one_memory_and_rank_shard_one_memory_per_rank(job):
    glob, per_rank = _pair(job, "memory_global"), _pair(job, "memory_rank_shard")
    for rank0, rank1 in (glob, per_rank):
        assert [len(m) for m in rank0["memories"]] == [len(m) for m in rank1["memories"]] == [8, 8]  # mem_size each
        assert rank0["accuracy_rows"] == rank1["accuracy_rows"] == 2  # both trained through 2 experiences
        assert rank0["final_fingerprint"] == rank1["final_fingerprint"]  # DDP still keeps one model
        assert rank0["finished"] == rank1["finished"] == 2  # the checkpoint loads on every rank
        assert rank0["reloaded_memory"] == rank1["reloaded_memory"] == rank0["memories"][-1]  # rank 0's memory
    assert glob[0]["memories"] == glob[1]["memories"]  # global: identical on every rank
    for exp in range(2):  # per rank: each herds from its own shard, nothing exchanged
        assert set(per_rank[0]["memories"][exp]).isdisjoint(per_rank[1]["memories"][exp])


# -- single process ---------------------------------------------------------------------------------------------
def test_init_distributed_is_a_no_op_without_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed(device="cpu")
    assert info == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert info.is_main and not info.is_distributed and DistributedHelper.is_main_process
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node=1: nothing to synchronise either
    assert init_distributed(device="cpu").world_size == 1 and not torch.distributed.is_initialized()
    shutdown_distributed()


def test_main_process_helpers_run_in_a_single_process(tmp_path):
    def write(path: Path) -> str:
        path.write_text("{}")
        return "written"

    assert on_main(write, tmp_path / "r.json") == "written"
    assert (tmp_path / "r.json").exists()
    with pytest.raises(ZeroDivisionError):
        on_main(lambda: 1 / 0)
    assert main_process_loggers(lambda: ["logger"]) == ["logger"]


def test_shard_indices_partition_like_distributed_sampler():
    shards = [shard_indices(10, r, 3, seed=1, epoch=2) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded to equal length
    assert set().union(*shards) == set(range(10))
    assert shards != [shard_indices(10, r, 3, seed=1, epoch=3) for r in range(3)]
    assert [shard_indices(5, r, 2, shuffle=False, drop_last=True) for r in range(2)] == [[0, 2], [1, 3]]
    assert shard_indices(0, 0, 2) == []


def test_shard_loader_shards_plain_and_avalanche_loaders(cil_benchmark):
    plain = DataLoader(TensorDataset(torch.arange(10.0)), batch_size=4, shuffle=True)
    seen = [torch.cat([b[0] for b in shard_loader(plain, rank=r, world_size=2, epoch=1)]).tolist() for r in range(2)]
    assert len(seen[0]) == len(seen[1]) == 5 and set(seen[0]) | set(seen[1]) == set(range(10))

    dataset = cil_benchmark.train_stream[0].dataset
    avalanche = TaskBalancedDataLoader(dataset, batch_size=8, shuffle=True)
    shards = [shard_loader(avalanche, rank=r, world_size=2, seed=3, epoch=0) for r in range(2)]
    assert all(isinstance(s, TaskBalancedDataLoader) for s in shards)
    assert [len(s) for s in shards] == [len(dataset) // 16] * 2
    ids = [torch.cat([b[0].flatten(1)[:, 0] for b in s]).tolist() for s in shards]
    assert not set(ids[0]) & set(ids[1]) and len(set(ids[0]) | set(ids[1])) == len(dataset)

    custom = DataLoader(TensorDataset(torch.arange(4.0)), batch_sampler=[[0, 1], [2, 3]])
    with pytest.raises(TypeError, match="cannot shard"):
        shard_loader(custom, rank=0, world_size=2)


def _numbered(first: int, count: int):
    """An Avalanche classification dataset whose samples are their own numbers (``first`` on)."""
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset

    return _make_taskaware_tensor_classification_dataset(
        torch.arange(first, first + count).float(), torch.zeros(count, dtype=torch.long), task_labels=0)


def _batches(loader) -> List[List[int]]:
    return [sorted(int(v) for v in batch[0]) for batch in loader]


@pytest.mark.parametrize("kind", ["plain", "task_balanced", "replay"])
def test_two_processes_global_batches_are_the_batches_of_one_process(kind):
    """Process r of 2 with batch b reads, at every step, its half of what one process with batch 2b reads: the same
    global batches whatever the number of processes (a memory smaller than the data restarts, reshuffled, alike)."""
    from avalanche.benchmarks.utils.data_loader import ReplayDataLoader

    data, memory = _numbered(0, 64), _numbered(100, 12)

    def loader(batch: int):
        if kind == "plain":
            return DataLoader(TensorDataset(torch.arange(64.0)), batch_size=batch, shuffle=True)
        if kind == "task_balanced":
            return TaskBalancedDataLoader(data, batch_size=batch, shuffle=True)
        return ReplayDataLoader(data, memory, batch_size=batch, batch_size_mem=batch // 2, shuffle=True,
                                oversample_small_tasks=True)

    one = _batches(shard_loader(loader(8), rank=0, world_size=1, seed=5, epoch=2))
    halves = [_batches(shard_loader(loader(4), rank=r, world_size=2, seed=5, epoch=2)) for r in range(2)]
    assert len(one) == len(halves[0]) == len(halves[1]) == 8
    assert [sorted(a + b) for a, b in zip(*halves)] == one
    assert not set(halves[0][0]) & set(halves[1][0])  # each process its own half
    if kind == "replay":  # 12 memory samples, 4 a batch: three passes over the memory, each in a new order
        passes = [sorted(v for batch in one[i:i + 3] for v in batch if v >= 100) for i in (0, 3)]
        assert passes[0] == passes[1] == list(range(100, 112))
        assert [v for v in one[0] if v >= 100] != [v for v in one[3] if v >= 100]
    another = _batches(shard_loader(loader(8), rank=0, world_size=1, seed=5, epoch=3))
    data_seen = [sorted(v for batch in batches for v in batch if v < 100) for batches in (one, another)]
    assert another != one and data_seen[0] == data_seen[1] == list(range(64))  # the next epoch: a new order


@pytest.mark.parametrize("order", ["seeded", "avalanche"])
def test_one_process_draws_batches_from_the_seed_not_the_global_random_state(cil_benchmark, order):
    """In one process the plugin draws the training batches as two processes would together (``seeded``), so the
    order does not depend on what consumed the global random state before; ``avalanche`` keeps Avalanche's."""
    def first_batches(global_seed: int) -> List[float]:
        seen: List[float] = []

        class Record(SupervisedPlugin):
            def before_forward(self, strategy, **kwargs):
                seen.append(round(float(strategy.mb_x.sum()), 4))

        strategy = build_strategy("naive", make_tiny(), evaluator=cil_evaluator(loggers=[], locality=False),
                                  device="cpu", plugins=[Record(), DistributedPlugin(seed=3, sample_order=order)],
                                  train_mb_size=8, train_epochs=2)
        torch.manual_seed(global_seed)
        strategy.train(cil_benchmark.train_stream[0])
        return seen

    first, second = first_batches(0), first_batches(1)
    assert len(first) == 2 * len(cil_benchmark.train_stream[0].dataset) // 8
    assert (first == second) == (order == "seeded")
    assert first[: len(first) // 2] != first[len(first) // 2:]  # each epoch its own order


@pytest.mark.parametrize("order", ["seeded", "avalanche"])
def test_a_random_memory_does_not_depend_on_how_many_numbers_augmentation_drew(cil_benchmark, order):
    """Augmentation in the main process draws per sample, so one process has drawn more random numbers by the end
    of an epoch than each of two: with seeded batches the plugin resets the global random states after every epoch,
    so Avalanche's Replay (a memory drawn at random in ``after_training_exp``) keeps the same exemplars."""
    def memory(draws_per_batch: int) -> List[float]:
        class Augment(SupervisedPlugin):  # stands in for random transforms: another count of draws per batch
            def before_forward(self, strategy, **kwargs):
                torch.rand(draws_per_batch)

        strategy = build_strategy("replay", make_tiny(), evaluator=cil_evaluator(loggers=[], locality=False),
                                  device="cpu", plugins=[Augment(), DistributedPlugin(seed=3, sample_order=order)],
                                  train_mb_size=8, train_epochs=1, mem_size=10)
        torch.manual_seed(0)
        strategy.train(cil_benchmark.train_stream[0])
        buffer = next(p for p in strategy.plugins if hasattr(p, "storage_policy")).storage_policy.buffer
        return sorted(round(float(buffer[i][0].sum()), 4) for i in range(len(buffer)))

    one, two = memory(8), memory(4)
    assert len(one) == len(two) == 10
    assert (one == two) == (order == "seeded")


def test_a_sample_order_the_plugin_does_not_know_is_refused():
    with pytest.raises(ValueError, match="sample_order must be one of seeded, avalanche"):
        DistributedPlugin(sample_order="random")


def test_plugin_does_nothing_in_a_single_process(cil_benchmark):
    seen = []

    class Check(SupervisedPlugin):
        def before_forward(self, strategy, **kwargs):
            seen.append(isinstance(strategy.model, DistributedDataParallel))

    plugin = DistributedPlugin()
    strategy = build_strategy(
        "naive",
        make_tiny(),
        evaluator=cil_evaluator(loggers=[], locality=False),
        device="cpu",
        plugins=[plugin, Check()],
        train_mb_size=16,
    )
    strategy.train(cil_benchmark.train_stream[0])
    strategy.eval(cil_benchmark.test_stream[:1])
    assert seen and not any(seen) and plugin.wraps == 0


@pytest.mark.parametrize("order", ["seeded", "avalanche"])
def test_the_run_seed_decides_the_repeated_augmentation_order_too(cil_benchmark, order):
    """Samplers that shard themselves (repeated augmentation) draw from the plugin's seed, the run's: two seeds,
    two orders; ``avalanche`` (in one process) leaves them the seed their plugin was given, as before."""
    from avalanche_lpa.plugins import RepeatedAugmentationPlugin

    def batches(seed: int) -> List[float]:
        seen: List[float] = []

        class Record(SupervisedPlugin):
            def before_forward(self, strategy, **kwargs):
                seen.append(round(float(strategy.mb_x.sum()), 4))

        strategy = build_strategy(
            "naive", make_tiny(), evaluator=cil_evaluator(loggers=[], locality=False), device="cpu",
            plugins=[RepeatedAugmentationPlugin(3), Record(), DistributedPlugin(seed=seed, sample_order=order)],
            train_mb_size=8)
        strategy.train(cil_benchmark.train_stream[0])
        return seen

    assert batches(1) == batches(1)
    assert (batches(1) != batches(2)) == (order == "seeded")


def test_the_ddp_wrapper_names_parameters_as_the_model_so_ewc_and_si_find_them(tmp_path):
    """Avalanche's EWC, MAS and SI store values per parameter name from the bare model and look them up in
    ``strategy.model.named_parameters()`` during the iterations, when the strategy holds the DDP wrapper: under
    DDP's ``module.`` names EWC's penalty was zero and SI stopped with a KeyError."""
    from avalanche.training.plugins import EWCPlugin, SynapticIntelligencePlugin
    from avalanche.training.utils import copy_params_dict
    from types import SimpleNamespace

    from avalanche_lpa.plugins import DistributedModel

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = make_tiny(num_classes=4)
        wrapper = DistributedModel(model)
        assert [n for n, _ in wrapper.named_parameters()] == [n for n, _ in model.named_parameters()]
        assert [n for n, _ in wrapper.named_buffers()] == [n for n, _ in model.named_buffers()]
        assert list(wrapper.parameters()) == list(model.parameters())  # the same tensors, DDP's own lists unchanged
        assert wrapper.state_dict().keys() == {f"module.{k}" for k in model.state_dict()}
        # finetuning's frozen_mode="eval" finds the frozen modules by the bare model's names through the wrapper
        from avalanche_lpa.plugins.finetune import FINETUNE_FROZEN, frozen_modules

        found = frozen_modules(wrapper, FINETUNE_FROZEN)
        assert found and found == frozen_modules(model, FINETUNE_FROZEN)

        ewc = EWCPlugin(ewc_lambda=1.0)
        ewc.saved_params[0] = copy_params_dict(model)
        ewc.importances[0] = copy_params_dict(model)  # any positive importance
        for param in ewc.importances[0].values():
            param.data = torch.ones_like(param.data)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.1)
        penalties = []
        for held in (model, wrapper):
            strategy = SimpleNamespace(model=held, device="cpu", loss=torch.zeros(()),
                                       clock=SimpleNamespace(train_exp_counter=1))
            ewc.before_backward(strategy)
            penalties.append(strategy.loss.detach().item())
        assert penalties[0] > 0 and penalties[1] == pytest.approx(penalties[0])

        si = SynapticIntelligencePlugin(si_lambda=1.0)
        SynapticIntelligencePlugin.create_syn_data(model, si.ewc_data, si.syn_data, si.excluded_parameters)
        SynapticIntelligencePlugin.pre_update(wrapper, si.syn_data, si.excluded_parameters)  # KeyError before
    finally:
        torch.distributed.destroy_process_group()
