"""The registry of ``build_strategy`` names: one :class:`Spec` per name (Avalanche class, options with defaults,
the head and model family it needs, how it takes our model apart and how the trained network comes back, the
checks that refuse a config before training). What a strategy needs is asked of its entry, never of its name."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.models import IncrementalClassifier, SCRModel
from avalanche.training import (
    AGEM,
    DER,
    ER_AML,
    GEM,
    LFL,
    MER,
    MIR,
    SCR,
    CoPE,
    Cumulative,
    CWRStar,
    FeatureReplay,
    FromScratchTraining,
    GDumb,
    GSS_greedy,
    ICaRL,
    JointTraining,
    LwF,
    Naive,
    Replay,
    StreamingLDA,
    SynapticIntelligence,
)
from avalanche.training.losses import MaskedCrossEntropy
from torch import nn
from torchvision.transforms import Compose, RandomHorizontalFlip, RandomResizedCrop

from ..compat.avalanche_strategies import ER_ACE, EWC, MAS, REPLAY_LOADER_MEM_BATCH, BiC, MemoryGuard
from ..models import dytox_keywords, dytox_model_name, model_keywords, model_name
from .recipe import DOUILLARD_OPTIONS, DYTOX_OPTIONS, RECIPE_OPTIONS, dytox_model
from .trained import cope_model, feature_replay_model, icarl_model, own_model, scr_model, slda_model

__all__ = ["DYTOX", "HEADS", "LOCALITY_VIT", "ModelFamily", "SPECS", "Spec", "head_width"]

#: Head requirements of the registry: ``any`` (growing or fixed), ``fixed`` (``num_classes=int``: a plain
#: ``nn.Linear``), ``single`` (one head over all classes: fixed or ``head_type="incremental"``, not
#: per-experience heads).
HEADS = ("any", "fixed", "single")

Parts = Callable[[nn.Module, Dict[str, Any], Optional[int]], Dict[str, Any]]
Check = Callable[[Dict[str, Any], Optional[int]], Optional[str]]
#: ``(strategy, model) -> network``: the trained network as the model class we built (see training/trained.py).
Trained = Callable[[Any, nn.Module], nn.Module]


@dataclass(frozen=True)
class ModelFamily:
    """The model family a strategy trains, as the runner builds it through timm's registry.

    Attributes:
        name: the registered timm name of an attention type and preset, e.g. ``("lpa", "cifar") -> "lpa_vit_cifar"``.
        keywords: every keyword its models take (what a config's ``model.overrides`` may set).
        own_heads: whether its models grow heads of their own (DyTox: one per task token), so they take no head
            keywords.
    """

    name: Callable[[str, str], str]
    keywords: Callable[[], List[str]]
    own_heads: bool = False


#: :class:`~avalanche_lpa.models.LocalityViT` (``lpa_vit_cifar``, ...), under the head the config asks for.
LOCALITY_VIT = ModelFamily(model_name, model_keywords)
#: :class:`~avalanche_lpa.models.DyTox` (``dytox_lpa_cifar``, ...): the DyTox strategies train nothing else.
DYTOX = ModelFamily(dytox_model_name, dytox_keywords, own_heads=True)


def _model(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    return {"model": model}


@dataclass(frozen=True)
class Spec:
    """The registry entry of one name: how ``build_strategy`` builds it, and what the runner asks of it (the model
    family and head to build, where the trained network is, whether it trains experience by experience).

    Attributes:
        cls: the Avalanche strategy class.
        options: the name's own options and defaults (passed to ``cls`` under the same name unless ``rename``
            maps them to another argument, or to ``None``: used by ``parts`` only).
        head: the head it needs (:data:`HEADS`).
        why: why it needs that head (for the error message).
        parts: the arguments taken from the model and the stream's class count, when known (default
            ``model=model``); a ``"model"`` entry is also what the optimizer is built over.
        loss: the strategy's own loss, when it ignores ours (``loss``, ``label_smoothing``, ... are refused).
        trains: whether it optimises weights (StreamingLDA does not: no optimizer, no lr schedule).
        logits: whether its training forward pass gives one row of class logits per target (SCR trains on
            projections of two views of each image: no training accuracy there).
        check: the one-line problem of a config (and the stream's class count, when known), or ``None``.
        plugins: plugins the name always adds.
        model: the model family it trains (:data:`LOCALITY_VIT`, or :data:`DYTOX` for the DyTox names); a timm
            model (``model.name``) replaces the default family.
        trained_model: ``(strategy, model) -> network``: the trained network as the class of ``model`` (the one
            the strategy was built around, or a freshly built one after a resume), for ``model.pt``; strategies
            that take the model apart put its parts back (:mod:`~avalanche_lpa.training.trained`).
        whole_stream: whether it trains once on the whole stream (``JointTraining``) rather than experience by
            experience.
        processes: why a run of it under another number of processes (the same global batch, seeded batches)
            trains another model, in words that follow "but" (``None``: it trains the same one). What Avalanche's
            strategy computes per process beyond the gradient that DDP averages decides it.
        torchrun: why it cannot train under several processes (``build_strategy`` refuses it there); ``None``: it
            can.
    """

    cls: type
    options: Dict[str, Any] = field(default_factory=dict)
    head: str = "any"
    why: str = ""
    rename: Dict[str, Optional[str]] = field(default_factory=dict)
    parts: Parts = _model
    loss: Optional[str] = None
    trains: bool = True
    logits: bool = True
    check: Optional[Check] = None
    plugins: Callable[[], List[SupervisedPlugin]] = list
    model: ModelFamily = LOCALITY_VIT
    trained_model: Trained = own_model
    whole_stream: bool = False
    processes: Optional[str] = None
    torchrun: Optional[str] = None

    def head_keywords(self, num_classes: int, head_type: str) -> Dict[str, Any]:
        """The model keywords that give it the head this name needs: a fixed head of ``num_classes``, none
        where the model grows heads of its own, else the growing head ``head_type``."""
        if self.head == "fixed":
            return {"num_classes": num_classes}
        return {} if self.model.own_heads else {"head_type": head_type}


def _part(model: nn.Module, name: str, attribute: str) -> Any:
    if not hasattr(model, attribute):
        raise ValueError(
            f"strategy {name!r} needs model.{attribute}; build the model as a LocalityViT (which has "
            "feature_extractor, classifier and embed_dim) or use another strategy"
        )
    return getattr(model, attribute)


def head_width(model: nn.Module) -> Optional[int]:
    """Classes of a fixed linear head (``None`` for growing or missing heads)."""
    head = getattr(model, "classifier", None)
    return head.out_features if isinstance(head, nn.Linear) else None


def _icarl(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    return dict(
        feature_extractor=_part(model, "icarl", "feature_extractor"),
        classifier=_part(model, "icarl", "classifier"),
        buffer_transform=None,
    )


def _cwr(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # CWR* rewrites rows of one linear layer by class id: a fixed head's, or the Linear inside the growing
    # IncrementalClassifier (looked up by name each time, so it follows the head as it grows).
    head = _part(model, "cwr", "classifier")
    if isinstance(head, nn.Linear):
        return dict(model=model, cwr_layer_name="classifier")
    if isinstance(head, IncrementalClassifier):
        return dict(model=model, cwr_layer_name="classifier.classifier")
    raise ValueError(
        f"strategy 'cwr' needs a head whose rows are the class ids, got {type(head).__name__}; build the model "
        "with num_classes=<total classes> or head_type='incremental'"
    )


def _scr(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # SCR trains the backbone through a projection MLP (contrastive loss) and classifies by nearest class mean.
    width = _part(model, "scr", "embed_dim")
    projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, config["projection_dim"]))
    size = tuple(_part(model, "scr", "img_size"))
    # Applied to the whole batch tensor: a second, augmented view of every image (SCR's positive pairs).
    views = Compose([RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True), RandomHorizontalFlip()])
    return dict(
        model=SCRModel(_part(model, "scr", "feature_extractor"), projection),
        augmentations=views if config["augment"] else Compose([]),
    )


def _slda(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # SLDA never uses the head: it fits class means and a shared covariance on the feature extractor's output.
    if not n_classes:
        raise ValueError(
            "strategy 'slda' needs the number of classes of the stream: pass build_strategy(..., num_classes=<total "
            "classes>) or build the model with num_classes=<total classes>"
        )
    return dict(
        slda_model=_part(model, "slda", "feature_extractor"),
        input_size=_part(model, "slda", "embed_dim"),
        num_classes=n_classes,
        criterion=nn.CrossEntropyLoss(),  # only reported: SLDA fits class means and a shared covariance
    )


def _gss(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    return dict(model=model, input_size=[_part(model, "gss", "in_chans"), *_part(model, "gss", "img_size")])


def _er_aml(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    return dict(model=model, feature_extractor=_part(model, "er_aml", "feature_extractor"))


def _cope(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # CoPE turns the fixed head into an L2-normalised embedding of its width, one prototype per class.
    if not head_width(model):
        raise ValueError("strategy 'cope' needs a fixed linear head (model.classifier); build the model with "
                         "num_classes=<total number of classes>")
    width = head_width(model)
    return dict(model=model, n_classes=width, p_size=width, criterion=nn.CrossEntropyLoss())  # replaced by its loss


def _feature_replay(model: nn.Module, config: Dict[str, Any], n_classes: Optional[int]) -> Dict[str, Any]:
    # A fresh MaskedCrossEntropy per strategy: FeatureReplay's default is one instance made at import
    # (avalanche-lib 0.5.0, 0.6.0) that remembers the classes it has seen, so a second FeatureReplay in the same
    # process would mask columns its new head does not have yet (IndexError).
    return dict(model=model, criterion=MaskedCrossEntropy())


def _check_gss(config: Dict[str, Any], n_classes: Optional[int]) -> Optional[str]:
    # GSS_greedy scores a batch against memory subsets of the batch's size: a batch larger than the memory gets
    # none and fails with "max() arg is an empty sequence". Later batches hold train_mb_size images plus the
    # replay loader's memory batch of 32 (GSS leaves it unset).
    least = config["train_mb_size"] + REPLAY_LOADER_MEM_BATCH
    if config["mem_size"] < least:
        return (
            f"gss needs mem_size >= train_mb_size + {REPLAY_LOADER_MEM_BATCH} = {least} (its batches hold "
            f"train_mb_size images plus a memory batch of {REPLAY_LOADER_MEM_BATCH}), got mem_size="
            f"{config['mem_size']}; raise mem_size or lower train_mb_size"
        )
    return None


def _check_er_aml(config: Dict[str, Any], n_classes: Optional[int]) -> Optional[str]:
    # See MemoryGuard: every class needs train_mb_size images in the class-balanced memory.
    if n_classes is not None and config["mem_size"] // n_classes < config["train_mb_size"]:
        return (
            f"er_aml needs mem_size >= train_mb_size x classes = {config['train_mb_size'] * n_classes} (a batch of "
            f"every class from its class-balanced memory; it hangs otherwise), got mem_size={config['mem_size']}; "
            "raise mem_size or lower train_mb_size"
        )
    return None


def _check_feature_replay(config: Dict[str, Any], n_classes: Optional[int]) -> Optional[str]:
    # FeatureReplay cycles a drop_last loader of batch_size_mem over its memory: a smaller memory never yields.
    # Under torchrun the processes' memory batches together are one global memory batch (DistributedPlugin).
    batch = (config["batch_size_mem"] or config["train_mb_size"]) * DistributedHelper.world_size
    if config["mem_size"] < batch:
        global_batch = "" if DistributedHelper.world_size == 1 else f" x {DistributedHelper.world_size} processes"
        return (
            f"feature_replay needs mem_size >= batch_size_mem{global_batch} = {batch} (it hangs otherwise), got "
            f"mem_size={config['mem_size']}; raise mem_size or lower batch_size_mem"
        )
    return None


# What Avalanche's strategies compute per process beyond the gradient DDP averages (avalanche-lib 0.5.0, 0.6.0):
# the reasons the processes line gives (Spec.processes).
#: A strategy whose memory batches come from a loader of its own, shuffled from the global random state with
#: batch_size_mem per process, not from the seed and dealt over the processes as the training batches are (the
#: plugin deals DER's, ER-ACE's and FeatureReplay's, and A-GEM's reference samples: data.memory_batches).
_OWN_MEMORY_LOADER = "{} draws its memory batches in each process from a loader of its own"

SPECS: Dict[str, Spec] = {
    # -- the original names (their options, defaults and behaviour are unchanged) ----------------------------
    "naive": Spec(Naive),
    "replay": Spec(Replay, dict(mem_size=2000)),
    "lwf": Spec(LwF, dict(alpha=1.0, temperature=2.0)),
    # Avalanche's ICaRL also trains with a growing head (avalanche-lib 0.5.0, 0.6.0: tests/test_strategies.py);
    # build_strategy keeps the paper's fixed output layer, as it always has.
    "icarl": Spec(
        ICaRL, dict(mem_size=2000, fixed_memory=True), head="fixed", why="the paper's fixed output layer",
        rename=dict(mem_size="memory_size"), parts=_icarl, loss="its own BCE loss", trained_model=icarl_model,
    ),
    "der": Spec(
        DER, dict(mem_size=2000, batch_size_mem=None, alpha=0.1, beta=0.5), head="fixed",
        why="its memory stores logits of the head's width",
    ),
    # Avalanche's EWC and MAS with their importances at the global batch (compat: theirs take the batch per process).
    "ewc": Spec(EWC, dict(ewc_lambda=1.0, ewc_mode="separate", decay_factor=None), rename=dict(ewc_mode="mode")),
    "gem": Spec(GEM, dict(patterns_per_exp=200, memory_strength=0.5)),
    # Avalanche's ER-ACE with its loss masked to the classes of the global batch (compat: theirs, each process's).
    "er_ace": Spec(ER_ACE, dict(mem_size=2000, batch_size_mem=10)),
    "lpa": Spec(Naive, RECIPE_OPTIONS, rename={key: None for key in RECIPE_OPTIONS}),
    "lpa_warmup": Spec(Naive, RECIPE_OPTIONS, rename={key: None for key in RECIPE_OPTIONS}),
    # The LPA authors' DyTox(+LPA) (bwnzheng/LPA_ICME2023), and DyTox / DyTox+ as Douillard's own code trains them.
    "dytox": Spec(Naive, DYTOX_OPTIONS, rename={key: None for key in DYTOX_OPTIONS}, parts=dytox_model, model=DYTOX),
    "dytox_douillard": Spec(
        Naive, DOUILLARD_OPTIONS, rename={key: None for key in DOUILLARD_OPTIONS}, parts=dytox_model, model=DYTOX
    ),
    "dytox_plus_douillard": Spec(
        Naive, DOUILLARD_OPTIONS, rename={key: None for key in DOUILLARD_OPTIONS}, parts=dytox_model, model=DYTOX
    ),
    # -- the rest of avalanche.training ------------------------------------------------------------------
    "agem": Spec(AGEM, dict(patterns_per_exp=200, sample_size=64)),
    "si": Spec(SynapticIntelligence, dict(si_lambda=1.0, eps=1e-7)),
    "mas": Spec(MAS, dict(lambda_reg=1.0, alpha=0.5)),
    "mir": Spec(
        MIR, dict(mem_size=2000, subsample=50, batch_size_mem=10), head="single",
        why="it differentiates every parameter, and per-experience heads freeze the old ones",
        torchrun="it scores memory samples with gradients of its own (torch.autograd.grad), which DDP does not average",
    ),
    "gdumb": Spec(
        GDumb, dict(mem_size=2000), head="single",
        why="it retrains from the initial weights, where per-experience heads keep the old heads frozen",
    ),
    "cumulative": Spec(Cumulative),
    "joint": Spec(
        JointTraining, head="single",
        why="it adapts the model to every experience first, and per-experience heads would freeze all but the last",
        whole_stream=True,
    ),
    "from_scratch": Spec(FromScratchTraining, dict(reset_optimizer=True)),  # Avalanche's default
    "bic": Spec(
        BiC, dict(mem_size=2000, val_percentage=0.1, temperature=2.0, stage_2_epochs=200, lamb=-1.0, stage_2_lr=0.1),
        rename=dict(temperature="T", stage_2_lr="lr"),
        processes="BiC's distillation normalises over each process's batch and its bias correction trains in each "
                  "process",
    ),
    "lfl": Spec(LFL, dict(lambda_e=1.0)),
    "cwr": Spec(CWRStar, head="single", why="it rewrites the rows of one linear layer by class id", parts=_cwr),
    "scr": Spec(
        SCR, dict(mem_size=2000, batch_size_mem=100, temperature=0.1, projection_dim=128, augment=True),
        rename=dict(projection_dim=None, augment=None), parts=_scr, logits=False,
        loss="its own supervised contrastive loss (and a nearest-class-mean classifier)", trained_model=scr_model,
        processes=_OWN_MEMORY_LOADER.format("SCR") + " and contrasts the samples of each process's batch only",
    ),
    "slda": Spec(
        StreamingLDA, dict(shrinkage_param=1e-4, streaming_update_sigma=True), parts=_slda,
        loss="no loss (it fits class means on the frozen features)", trains=False, trained_model=slda_model,
        torchrun="it fits its class means and covariance in each process on that process's share of the data and "
                 "never combines them",
    ),
    "gss": Spec(
        GSS_greedy, dict(mem_size=2000, mem_strength=1), parts=_gss, check=_check_gss,
        plugins=lambda: [MemoryGuard("gss")],
        torchrun="it fills its memory from each process's share with extra backward passes whose number depends on "
                 "the data (the processes' DDP calls would not match)",
    ),
    "er_aml": Spec(
        ER_AML, dict(mem_size=2000, batch_size_mem=10, temperature=0.1, base_temperature=0.07, same_task_neg=True),
        rename=dict(temperature="temp", base_temperature="base_temp"), parts=_er_aml, check=_check_er_aml,
        plugins=lambda: [MemoryGuard("er_aml")],
        processes=_OWN_MEMORY_LOADER.format("ER-AML") + " and contrasts the samples of each process's batch only",
    ),
    "feature_replay": Spec(
        FeatureReplay, dict(mem_size=2000, batch_size_mem=10), parts=_feature_replay,
        loss="its own masked cross-entropy", check=_check_feature_replay,
        plugins=lambda: [MemoryGuard("feature_replay")], trained_model=feature_replay_model,
    ),
    "cope": Spec(
        CoPE, dict(mem_size=2000, alpha=0.99, temperature=0.1), head="fixed", rename=dict(temperature="T"),
        why="its prototypes have the head's width",
        parts=_cope, loss="its own pseudo-prototypical proxy loss", trained_model=cope_model,
        torchrun="it accumulates its class prototypes in each process and never combines them",
    ),
    "mer": Spec(MER, dict(mem_size=2000, batch_size_mem=10, n_inner_steps=5, beta=0.1, gamma=0.1),
                torchrun="its per-sample inner steps would each be averaged over the processes"),
}
