"""Fixes of other libraries' behaviour (Avalanche, timm, Pillow, dill, wandb, torch), one module per library.

The room imports no other room of the package, so any room may use it. :data:`WORKAROUNDS` lists every place
where this package works around another library: the library and versions, what upstream does, and where our
fix lives. Most fixes live here; a few are features of ours that close a gap as a side effect (DDP for any
strategy, the per-experience lr schedule, herding on a scoped hook, atomic checkpoints) and live with the
feature, listed here all the same. ``tests/test_compat.py`` imports every listed fix and checks that every
public name of this room is listed.

* :mod:`.pillow_augment`: timm's auto-augment ops on every Pillow.
* :mod:`.avalanche_wandb`: Avalanche's ``WandBLogger`` on current wandb (imported on use: it loads wandb).
* :mod:`.avalanche_csv`: Avalanche's ``CSVLogger`` appending to a resumed run's files instead of emptying them.
* :mod:`.avalanche_strategies`: BiC on current torch; a one-line error where ER_AML, FeatureReplay, GSS hang or crash;
  EWC's and MAS's importances and ER-ACE's class mask at the global batch under DDP.
* :mod:`.avalanche_metrics`, :mod:`.avalanche_optimizer`, :mod:`.avalanche_warnings`: the accuracy matrix, the
  weight-decay groups of grown parameters, deprecation warnings once per run.
* :mod:`.dill_pickling`: what Avalanche's dill checkpoints need on current torch.
* :mod:`.timm_optim`, :mod:`.torch_ddp`: one name for an API that moved between timm / torch releases.
"""
from dataclasses import dataclass
from typing import Tuple

from .pillow_augment import PillowSafeOp, augment_ops, pillow_safe_augment

__all__ = ["PillowSafeOp", "WORKAROUNDS", "Workaround", "augment_ops", "pillow_safe_augment"]


@dataclass(frozen=True)
class Workaround:
    """One place where this package works around another library.

    Attributes:
        library: the library that misbehaves, with the versions the fix applies to.
        upstream: what upstream does (the symptom a user would see).
        fix: dotted path of our fix (``avalanche_lpa.<module>.<name>``).
    """

    library: str
    upstream: str
    fix: str


_AV = "avalanche-lib 0.5.0, 0.6.0"

WORKAROUNDS: Tuple[Workaround, ...] = (
    Workaround("timm (all) with Pillow >= 13", "RandAugment's posterize asks for 0 bits: ValueError",
               "avalanche_lpa.compat.pillow_augment.pillow_safe_augment"),
    Workaround("timm (all), Pillow (all)", "geometric ops fill a greyscale image with an RGB colour: TypeError",
               "avalanche_lpa.compat.pillow_augment.PillowSafeOp"),
    Workaround(f"{_AV} with wandb >= 0.31", "WandBLogger calls wandb.util.generate_id / wandb.viz (gone), "
               "and starts a W&B run when unpickled", "avalanche_lpa.compat.avalanche_wandb.CompatWandBLogger"),
    Workaround(_AV, "CSVLogger opens its files with mode 'w': a resumed run loses the rows written before",
               "avalanche_lpa.compat.avalanche_csv.AppendingCSVLogger"),
    Workaround(f"{_AV} with torch >= 2.13", "dill cannot pickle torch.optim classes: checkpoints fail",
               "avalanche_lpa.compat.dill_pickling.register_optimizer_reducers"),
    Workaround(_AV, "AGEM, MIR, ER_AML, FeatureReplay keep memory-loader generators: checkpoints fail",
               "avalanche_lpa.compat.dill_pickling.register_generator_reducer"),
    Workaround(f"{_AV} with current torch", "BiC passes verbose= to MultiStepLR, which torch removed",
               "avalanche_lpa.compat.avalanche_strategies.BiC"),
    Workaround(_AV, "ER_AML and FeatureReplay loop forever, GSS_greedy crashes, on a too small memory",
               "avalanche_lpa.compat.avalanche_strategies.MemoryGuard"),
    Workaround(_AV, "AccuracyMatrixPluginMetric raises on eval before train, emits one tensor filled in place",
               "avalanche_lpa.compat.avalanche_metrics.AccuracyMatrix"),
    Workaround("avalanche-lib 0.6.0", "make_optimizer raises 'No unique group found' for a grown head under "
               "timm's weight-decay groups", "avalanche_lpa.compat.avalanche_optimizer.WeightDecayGroupsPlugin"),
    Workaround("avalanche-lib 0.5.0", "make_optimizer calls reset_optimizer, which raises on several param groups",
               "avalanche_lpa.compat.avalanche_optimizer.multiple_param_groups_supported"),
    Workaround("timm 0.9", "param_groups_weight_decay is only in timm.optim.optim_factory (timm.optim in 1.0)",
               "avalanche_lpa.compat.timm_optim.param_groups_weight_decay"),
    Workaround("torch >= 2.14", "DDP deprecates broadcast_buffers for forward_sync_buffers",
               "avalanche_lpa.compat.torch_ddp.NO_FORWARD_BUFFER_SYNC"),
    Workaround(_AV, "@deprecated resets the warnings registry: the same warning after every experience",
               "avalanche_lpa.compat.avalanche_warnings.each_deprecation_once"),
    Workaround(_AV, "under DDP, EWC's and MAS's importances are taken at each process's batch: another number of "
               "processes, another penalty", "avalanche_lpa.compat.avalanche_strategies.EWC"),
    Workaround(_AV, "under DDP, MAS's importances are taken at each process's batch (as EWC's)",
               "avalanche_lpa.compat.avalanche_strategies.MAS"),
    Workaround(_AV, "under DDP, ER-ACE masks its loss to the classes of each process's batch",
               "avalanche_lpa.compat.avalanche_strategies.ER_ACE"),
    # Features of ours that also close a gap of Avalanche; they live with the feature.
    Workaround(_AV, "the checkpoint is written in place: a kill while saving truncates it",
               "avalanche_lpa.runner.checkpoint.save_checkpoint_atomic"),
    Workaround(_AV, "strategies never wrap the model in DDP (wrap_model would pick cuda:<global rank>)",
               "avalanche_lpa.plugins.distributed.DistributedPlugin"),
    Workaround(_AV, "EWC, MAS and SI look parameters up by name in strategy.model: under DDP's module. prefix "
               "none matched (zero penalties, SI's KeyError)", "avalanche_lpa.plugins.distributed.DistributedModel"),
    Workaround(_AV, "init_distributed picks cuda:<global rank>, absent on a second node",
               "avalanche_lpa.distributed.init_distributed"),
    Workaround(_AV, "eval loaders are sharded while no metric is reduced",
               "avalanche_lpa.data.sharding.whole_loader"),
    Workaround(_AV, "new-API train loaders have no distributed sampler; multi-dataset loaders repeat epoch 0's order",
               "avalanche_lpa.data.sharding.shard_loader"),
    Workaround(_AV, "DER, ER-ACE and FeatureReplay shuffle their memory batches in each process",
               "avalanche_lpa.data.memory_batches.memory_loader"),
    Workaround(_AV, "A-GEM reads its reference samples in order in one process, a seed-0 shuffle per process under DDP",
               "avalanche_lpa.data.memory_batches.ReferenceSamples"),
    Workaround(_AV, "LRSchedulerPlugin resets to base_lrs and cannot change the lr after experience 0",
               "avalanche_lpa.plugins.lr_schedule.ExperienceLRSchedulePlugin"),
    Workaround(_AV, "herding's FeatureExtractorBackbone leaves a forward hook on the model for good",
               "avalanche_lpa.plugins.herding.HerdingMemory"),
    Workaround(_AV, "FeatureReplay's default loss is one instance shared by every strategy in the process",
               "avalanche_lpa.training.registry"),
)
