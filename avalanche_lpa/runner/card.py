"""The run card: what a run is, in the words of its opening block (:class:`~.console.RunCard`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from ..config.schema import RunConfig
from ..data import data_location, dataset_info
from ..distributed import DistInfo
from ..training import strategy_entry
from .console import RunCard
from .folder import run_name
from .model import model_label, parameter_count

__all__ = ["process_count_note", "run_card", "run_facts", "sample_order", "shown_path", "start_label",
           "strategy_summary"]

_ATTENTION = {"lpa": "LPA attention", "gpsa": "GPSA attention", "mhsa": "plain attention"}


def sample_order(config: RunConfig, world_size: int) -> str:
    """How the run draws its training batches: ``seeded``, or ``avalanche`` (one process only: torchrun draws
    seeded batches whatever the config says)."""
    return "seeded" if world_size > 1 else config.data.sample_order


def _memory_scope(config: RunConfig) -> Optional[str]:
    """The memory's scope (``global`` unless the strategy names another); ``None`` for a strategy without memory."""
    options = config.strategy
    return options.get("memory_scope", "global") if options.get("mem_size") is not None else None


#: Strategy options that, like ``train_mb_size``, count samples per process, and their words in the processes line.
_PER_PROCESS_BATCHES = (("batch_size_mem", "memory batch"), ("sample_size", "reference batch"))


def process_count_note(config: RunConfig, world_size: int) -> str:
    """Whether a run of this config with another number of processes (the same global batch) is the same
    experiment, and if not why, in one line of the opening block."""
    if sample_order(config, world_size) == "avalanche":
        return ("batches from Avalanche's shuffle (data.sample_order: avalanche); torchrun draws them from the seed: "
                "another number of processes trains on other batches")
    entry = strategy_entry(config.strategy.name)
    if entry.torchrun:
        return f"one only: {config.strategy.name} does not train under torchrun ({entry.torchrun})"
    batch = config.strategy.get("train_mb_size")
    at = f" at global batch {batch * world_size}" if batch else ""
    for option, words in _PER_PROCESS_BATCHES:  # per process too: another process count keeps the product
        if batch and config.strategy.get(option):
            at += f" and {words} {config.strategy[option] * world_size}"
    same = f"any number{at}: the same batches"
    scope = _memory_scope(config)
    differs = entry.processes  # what the strategy computes per process
    if scope not in (None, "global"):
        differs = "; ".join(filter(None, [differs, f"memory_scope {scope} keeps one memory per process (another "
                                                   "number of processes: another memory; global: one)"]))
    if differs:
        return f"{same}, but {differs}"
    return f"{same} and the same memory" if scope is not None else same


def run_facts(config: RunConfig, world_size: int) -> Dict[str, Any]:
    """What decides how a run compares with another beside its config's science: processes, batch per process and
    in all, how batches are drawn, memory and its scope, precision, a pretrained backbone (``results.json``'s
    ``run_card``)."""
    options = config.strategy
    batch = options.get("train_mb_size")
    return {
        "world_size": world_size,
        "batch_per_process": batch,
        "global_batch": batch * world_size if batch is not None else None,
        "sample_order": sample_order(config, world_size),
        "memory_size": options.get("mem_size"),
        "memory_scope": _memory_scope(config),
        "precision": options.get("precision", "fp32"),
        "pretrained": bool((config.model.kwargs or {}).get("pretrained", False)) if config.model.name else False,
    }


def strategy_summary(options: Mapping[str, Any], world_size: int = 1) -> str:
    """A strategy's main options in words: ``lpa: 5 epochs (10 on the first experience), batch 64, lr 0.001, ...``
    (under several processes the batch per process and in all, and the memory's scope)."""
    parts: List[str] = []
    epochs = options.get("train_epochs")
    if epochs is not None:
        first = options.get("epochs_first")
        parts.append(f"{epochs} epoch{'s' if epochs != 1 else ''}"
                     + (f" ({first} on the first experience)" if first not in (None, epochs) else ""))
    if options.get("train_mb_size") is not None:
        batch = options["train_mb_size"]
        parts.append(f"batch {batch}" if world_size == 1 else
                     f"batch {batch} per process ({batch * world_size} in all)")
    if options.get("lr") is not None:
        parts.append(f"lr {options['lr']:g}" + (", schedule" if options.get("lr_schedule") else ""))
    if options.get("mem_size") is not None:
        scope = options.get("memory_scope", "global")
        parts.append(f"memory {options['mem_size']}" + (f" ({scope})" if world_size > 1 else ""))
    finetune = options.get("finetune")
    if isinstance(finetune, Mapping) and finetune.get("epochs"):
        parts.append(f"finetuning {finetune['epochs']} epoch{'s' if finetune['epochs'] != 1 else ''}")
    if options.get("precision", "fp32") != "fp32":
        parts.append(options["precision"])
    return f"{options.name}: {', '.join(parts)}" if parts else options.name


def shown_path(path: Path) -> str:
    """A path as the console shows it: under the home folder as ``~/...`` (shorter, and a pasted log names no
    user), elsewhere as it is."""
    try:
        return str(Path("~") / Path(path).relative_to(Path.home()))
    except ValueError:
        return str(path)


def _data(config: RunConfig) -> str:
    info = dataset_info(config.data.dataset)
    where = data_location(config.data.dataset, config.data.root)
    if where is None:
        return f"{info.title} (generated in memory, no files)"
    return f"{info.title} from {shown_path(where)}"


def _split(benchmark: Any) -> str:
    sizes = [len(exp.classes_in_this_experience) for exp in benchmark.train_stream]
    train = sum(len(exp.dataset) for exp in benchmark.train_stream)
    test = sum(len(exp.dataset) for exp in benchmark.test_stream)
    if len(set(sizes)) == 1:
        split = f"{len(sizes)} experiences x {sizes[0]} classes"
    elif len(set(sizes[1:])) == 1:  # a B50-style split: a larger first experience
        split = f"{len(sizes)} experiences: {sizes[0]} classes, then {len(sizes) - 1} x {sizes[1]}"
    else:
        split = f"{len(sizes)} experiences, {sum(sizes)} classes in all"
    return f"{split}; {train:,} training and {test:,} test images"


def _device(info: DistInfo) -> str:
    if info.world_size == 1:
        return f"{info.device} (1 process)"
    return f"{info.device} on each of {info.world_size} processes (torchrun, {info.backend})"


def start_label(resume: bool, finished: int, position: Optional[Mapping[str, Any]], total: int) -> str:
    """``fresh``, or where a resumed run continues: after ``finished`` of ``total`` experiences, or inside one at
    the checkpoint's ``position`` (1-based experience and epoch)."""
    if not resume:
        return "fresh"
    if position is not None:
        phase = "finetuning epoch" if position["phase"] == "finetune" else "epoch"
        return f"resumed inside experience {position['experience'] + 1}/{total}, {phase} {position['epoch'] + 1}"
    if finished == 0:
        return "fresh: --resume found no checkpoint in the folder, starting at experience 1"
    return f"resumed after experience {finished}/{total}"


def run_card(config: RunConfig, folder: Path, benchmark: Any, network: Any, info: DistInfo, start: str) -> RunCard:
    """The card of a run about to train ``network`` on ``benchmark``, in ``folder`` (``start``: fresh or where a
    resumed run continues)."""
    label = model_label(config)
    if config.model.name:
        kind = " (pretrained)" if run_facts(config, info.world_size)["pretrained"] else ""
    else:
        kind = f" ({_ATTENTION.get(config.model.attn_type, config.model.attn_type)})"
    return RunCard(
        name=run_name(config), model=f"{label}{kind}", parameters=parameter_count(network),
        device=_device(info), data=_data(config), split=_split(benchmark),
        strategy=strategy_summary(config.strategy, info.world_size),
        processes=process_count_note(config, info.world_size), start=start, output=str(folder),
    )
