"""One process of the DDP test: ``torchrun --nproc_per_node=2 tests/distributed_worker.py OUT_DIR``.

Trains a tiny LocalityViT for 2 experiences on CPU with the gloo backend, in three runs sharing one process
group (startup dominates the test's time):

* ``replay``: ``build_strategy("replay")`` on ``synthetic_benchmark`` (Avalanche's legacy API: task-balanced
  and replay loaders) with :class:`DistributedPlugin`;
* ``naive_new_api``: ``build_strategy("naive")`` on the same data as a new-API ``class_incremental_benchmark``
  (a plain ``DataLoader``) with :class:`DistributedPlugin`;
* ``control``: the ``replay`` run without the plugin, i.e. stock avalanche-lib; the test expects it to fail the
  checks the other runs pass, which shows that the checks can fail;
* ``memory_global`` / ``memory_rank_shard``: the ``lpa`` recipe with ``memory_scope`` global / rank_shard: the
  memory each rank holds after every experience, then a checkpoint written by rank 0 and loaded by every rank.

Each process writes what it observed to ``OUT_DIR/status/rank<r>.json``; rank 0 alone writes
``OUT_DIR/results/<run>.json`` through :func:`on_main`. The test compares the files.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.logging import InteractiveLogger
from torch.nn.parallel import DistributedDataParallel

from avalanche_lpa.distributed import init_distributed, main_process_loggers, on_main, shutdown_distributed
from avalanche_lpa.plugins import DistributedPlugin
from avalanche_lpa.plugins.distributed import model_fingerprint
from avalanche_lpa.data import TargetTensorDataset, synthetic_benchmark
from avalanche_lpa.metrics.cil import cil_evaluator, experience_sizes, summarize
from avalanche_lpa.models import LocalityViT
from avalanche_lpa.training import build_strategy

BENCHMARK = dict(n_experiences=2, classes_per_experience=2, img_size=8, in_chans=1)


class Probe(SupervisedPlugin):
    """Records, in this process, what the strategy does with the model and the data."""

    def __init__(self) -> None:
        super().__init__()
        self.wrapped: List[bool] = []  # strategy.model is DDP at each forward pass
        self.head_in_optimizer: List[bool] = []  # the wrapped head's parameters are what the optimizer steps
        self.head_units: List[int] = []
        self.attention_maps: List[List[int]] = []  # shapes of get_attention_maps read through the wrapper
        self.fingerprints: List[List[float]] = []  # parameters after every optimizer step
        self.samples: Dict[str, List[float]] = {}  # first pixel of each training image, per "exp/epoch"
        self.eval_samples = 0
        self.draws: List[float] = []  # a number from the global random state at each forward pass (augmentation's)

    def before_forward(self, strategy: Any, **kwargs: Any) -> None:
        self.wrapped.append(isinstance(strategy.model, DistributedDataParallel))
        self.draws.append(torch.rand(()).item())
        module = DistributedHelper.unwrap_model(strategy.model)
        optimized = {id(p) for group in strategy.optimizer.param_groups for p in group["params"]}
        self.head_in_optimizer.append(all(id(p) in optimized for p in module.head.parameters()))
        self.head_units.append(module.head.classifier.out_features)
        if not self.attention_maps:
            with torch.no_grad():
                maps = strategy.model.get_attention_maps(strategy.mb_x[:1])  # attribute read through the wrapper
            self.attention_maps = [list(m.shape) for m in maps]

    def after_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
        key = f"{strategy.clock.train_exp_counter}/{strategy.clock.train_exp_epochs}"
        self.samples.setdefault(key, []).extend(strategy.mb_x.flatten(1)[:, 0].tolist())

    def after_update(self, strategy: Any, **kwargs: Any) -> None:
        self.fingerprints.append(model_fingerprint(DistributedHelper.unwrap_model(strategy.model), buffers=False).tolist())

    def after_eval_iteration(self, strategy: Any, **kwargs: Any) -> None:
        self.eval_samples += len(strategy.mb_y)


def new_api_benchmark():
    """The synthetic benchmark's data as a benchmark of Avalanche's new API (experiences without task labels)."""
    legacy = synthetic_benchmark(**BENCHMARK)
    datasets = {}
    for name, dataset in (("train", legacy.original_train_dataset), ("test", legacy.original_test_dataset)):
        samples = [dataset[i] for i in range(len(dataset))]
        images = torch.stack([s[0] for s in samples])
        labels = torch.tensor([int(s[1]) for s in samples])
        datasets[name] = TargetTensorDataset(images, labels)
    return class_incremental_benchmark(datasets, class_order=[0, 1, 2, 3], num_experiences=2)


def jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_results(path: Path, payload: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x") as f:  # "x": a second writer would fail instead of overwriting
        json.dump({**payload, "written_by_rank": int(os.environ["RANK"])}, f)


def run(name: str, strategy_name: str, benchmark: Any, distributed: bool, out: Path) -> Dict[str, Any]:
    torch.manual_seed(0)  # same initial model everywhere; DDP would broadcast rank 0's anyway
    model = LocalityViT(
        attn_type="lpa", img_size=8, patch_size=2, in_chans=1, embed_dim=18, depth=2, num_heads=9, num_classes=None
    )
    probe = Probe()
    plugin = DistributedPlugin(check_consistency=distributed)
    evaluator = cil_evaluator(
        loggers=main_process_loggers(lambda: [InteractiveLogger()]), probe_size=16, accuracy_matrix_metric=False
    )
    options = dict(train_mb_size=8, eval_mb_size=32, train_epochs=2, lr=1e-3)
    if strategy_name == "replay":
        options["mem_size"] = 16
    strategy = build_strategy(
        strategy_name,
        model,
        evaluator=evaluator,
        device="cpu",
        plugins=([plugin] if distributed else []) + [probe],
        **options,
    )
    for experience in benchmark.train_stream:
        strategy.train(experience, eval_streams=[])
        strategy.eval(benchmark.test_stream)
    summary = summarize(strategy, exp_sizes=experience_sizes(benchmark.test_stream)).as_dict()
    if distributed:
        on_main(write_results, out / "results" / f"{name}.json", {"run": name, "summary": summary})
    return dict(
        wrapped=probe.wrapped,
        wraps=plugin.wraps,
        head_in_optimizer=probe.head_in_optimizer,
        head_units=probe.head_units,
        attention_maps=probe.attention_maps,
        fingerprints=probe.fingerprints,
        final_fingerprint=model_fingerprint(DistributedHelper.unwrap_model(strategy.model)).tolist(),
        samples=probe.samples,
        draws=probe.draws,
        train_sizes=[len(e.dataset) for e in benchmark.train_stream],
        eval_samples=probe.eval_samples,
        test_size=sum(experience_sizes(benchmark.test_stream)),
        metrics=jsonable(evaluator.get_all_metrics()),
        summary=summary,
    )


def memory_run(scope: str, out: Path) -> Dict[str, Any]:
    """The ``lpa`` recipe with ``memory_scope=scope``: each rank's memory after every experience, and a checkpoint."""
    from avalanche_lpa.runner.checkpoint import load_checkpoint, save_checkpoint_atomic
    from avalanche_lpa.plugins import ConcatReplayPlugin

    torch.manual_seed(0)
    model = LocalityViT(attn_type="lpa", img_size=8, patch_size=2, in_chans=1, embed_dim=18, depth=2, num_heads=9,
                        head_type="per_experience")
    benchmark = synthetic_benchmark(**BENCHMARK)
    strategy = build_strategy(
        "lpa", model, evaluator=cil_evaluator(loggers=[], probe_size=16, accuracy_matrix_metric=False), device="cpu",
        plugins=[DistributedPlugin(check_consistency=True)], memory_scope=scope, mem_size=8, train_mb_size=8,
        train_epochs=1, epochs_first=None, finetune={"epochs": 1}, lr_schedule={"schedule_epochs": None},
    )
    replay = next(p for p in strategy.plugins if isinstance(p, ConcatReplayPlugin))
    memories = []
    for experience in benchmark.train_stream:
        strategy.train(experience, eval_streams=[])
        strategy.eval(benchmark.test_stream)
        memories.append(sorted(float(x.flatten()[0]) for x, *_ in replay.storage_policy.buffer))
    path = out / f"checkpoint_{scope}.pkl"
    on_main(save_checkpoint_atomic, strategy, path)
    loaded, finished = load_checkpoint(strategy, path)
    reloaded = next(p for p in loaded.plugins if isinstance(p, ConcatReplayPlugin))
    return dict(
        memories=memories,
        reloaded_memory=sorted(float(x.flatten()[0]) for x, *_ in reloaded.storage_policy.buffer),
        finished=finished,
        final_fingerprint=model_fingerprint(DistributedHelper.unwrap_model(strategy.model)).tolist(),
        accuracy_rows=len(summarize(strategy, exp_sizes=experience_sizes(benchmark.test_stream)).as_dict()[
            "accuracy_matrix"]),
    )


def main() -> None:
    out = Path(sys.argv[1])
    info = init_distributed(backend="gloo", device="cpu", seed=0)
    torch.set_num_threads(1)
    status: Dict[str, Any] = dict(rank=info.rank, world_size=info.world_size, is_main=info.is_main)
    status["replay"] = run("replay", "replay", synthetic_benchmark(**BENCHMARK), True, out)
    status["naive_new_api"] = run("naive_new_api", "naive", new_api_benchmark(), True, out)
    status["control"] = run("control", "replay", synthetic_benchmark(**BENCHMARK), False, out)
    for scope in ("global", "rank_shard"):
        status[f"memory_{scope}"] = memory_run(scope, out)
    (out / "status").mkdir(parents=True, exist_ok=True)
    (out / "status" / f"rank{info.rank}.json").write_text(json.dumps(status))
    shutdown_distributed()


if __name__ == "__main__":
    main()
