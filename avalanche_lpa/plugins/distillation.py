"""Distillation from the model of the previous experience: the authors' term and an LwF-based alternative.

* :class:`OldSampleDistillationPlugin` (the authors' ``continual/losses.py``): only the samples whose label
  belongs to an earlier experience (the memory samples) are distilled, on the old classes' logits, with
  ``KL(log_softmax(s / T) || log_softmax(t / T))`` averaged over *all elements* (``reduction="mean"``, i.e.
  divided by ``n_old_samples * C_old``; the authors warn not to change it to ``batchmean``) times ``T^2``, and
  ``loss = (1 - lambda) * classification + lambda * KD`` with ``lambda = C_old / C_total``. Under DDP the mean
  is over the old samples of the whole global batch (the authors' two-GPU runs averaged per GPU), so that any number
  of processes trains the model one process trains on the same global batch.
* ``OldSampleDistillationPlugin(all_samples=True)`` (Douillard's DyTox, ``auto_kd`` in ``continual/engine.py``): the
  same KL term over *every* sample of the batch, and the classification loss always scaled by ``1 - lambda``.
* :class:`WeightedLwFPlugin`: the same weighting around Avalanche's ``LwFPlugin`` (every sample distilled,
  ``batchmean``), kept as an option; its KD is ``C_old`` times stronger than the authors'.
"""
from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Set

import torch
import torch.distributed as dist
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import LwFPlugin
from torch import nn

from ._classes import experience_classes
from .finetune import in_finetuning

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = [
    "OldSampleDistillationPlugin",
    "WeightedLwFPlugin",
    "distilled_samples",
    "distillation_weight",
    "old_sample_distillation",
]



def distillation_weight(n_old: int, n_total: int) -> float:
    """``lambda = n_old / n_total`` (0 when nothing has been seen)."""
    if n_old < 0 or n_total < n_old:
        raise ValueError(f"need 0 <= n_old <= n_total, got n_old={n_old}, n_total={n_total}")
    return n_old / n_total if n_total else 0.0


def distilled_samples(labels: torch.Tensor, old_classes: Sequence[int], all_samples: bool = False) -> torch.Tensor:
    """``[B]`` mask of the samples the KD term distils: those labelled with an old class (every one with
    ``all_samples``)."""
    if all_samples:
        return torch.ones_like(labels, dtype=torch.bool)
    return torch.isin(labels, torch.as_tensor(sorted(old_classes), device=labels.device, dtype=labels.dtype))


def old_sample_distillation(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    old_classes: Sequence[int],
    temperature: float = 1.0,
    all_samples: bool = False,
) -> Optional[torch.Tensor]:
    """The authors' KD term (before the ``lambda`` weight); ``None`` when no sample of an old class is in the batch.

    Args:
        logits: the student's ``[B, C]`` logits.
        teacher_logits: the teacher's logits on the same inputs (at least the old classes' columns).
        labels: ``[B]`` class ids (before mixup: a mixed sample counts by its own label, as theirs).
        old_classes: class ids learned before the current experience (the distilled columns).
        temperature: ``T``.
        all_samples: distil every sample (Douillard's DyTox), not only those of old classes.

    Returns:
        ``kl_div(log_softmax(s/T), log_softmax(t/T), reduction="mean", log_target=True) * T^2`` over the old
        samples' old-class columns.
    """
    columns = torch.as_tensor(sorted(old_classes), device=logits.device, dtype=torch.long)
    old = distilled_samples(labels, old_classes, all_samples)
    if len(columns) == 0 or not bool(old.any()):
        return None
    student = logits[old][:, columns] / temperature
    teacher = teacher_logits[old][:, columns].to(student.dtype) / temperature
    with warnings.catch_warnings():  # PyTorch warns that "mean" is not "batchmean": the authors chose it
        warnings.simplefilter("ignore", UserWarning)
        kd = F.kl_div(F.log_softmax(student, dim=1), F.log_softmax(teacher, dim=1), reduction="mean", log_target=True)
    return kd * temperature**2


class OldSampleDistillationPlugin(SupervisedPlugin, supports_distributed=True):
    """The authors' distillation (see the module docstring), for any Avalanche strategy.

    The teacher is a frozen copy (eval mode, no gradients) of the model taken at the start of every
    experience after the first, i.e. after the previous experience and its finetuning, as the authors copy
    it. In ``before_backward`` the teacher runs on ``strategy.mb_x`` (already mixed by mixup, as theirs) and,
    if the batch holds samples of earlier experiences, ``strategy.loss`` becomes
    ``(1 - lambda) * loss + lambda * KD``; without such samples the loss is left as it is (their
    ``distillation_loss`` returns 0 before scaling the classification loss). Anything other plugins added to
    the loss before this one is scaled too. It stays on during the finetuning phase of
    :class:`BalancedFinetuningPlugin` unless ``finetuning=False``. The teacher is dropped after ``train``
    returns, so only a checkpoint taken inside an experience pickles it.

    Args:
        temperature: ``T`` (the authors use 1).
        all_samples: Douillard's DyTox (``auto_kd``): distil every sample and always scale the classification
            loss by ``1 - lambda`` once a teacher exists.
        finetuning: distil during the finetuning epochs too (the LPA authors; Douillard's
            ``finetuning_teacher`` is off: no teacher, no ``1 - lambda`` there).
    """

    def __init__(self, temperature: float = 1.0, all_samples: bool = False, finetuning: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature
        self.all_samples = all_samples
        self.finetuning = finetuning
        self.seen_classes: Set[int] = set()  # classes of the finished experiences
        self.old_classes: Set[int] = set()  # classes distilled during the current experience
        self.weight = 0.0
        self.lambdas: Dict[int, float] = {}  # lambda of every training experience, by index
        self.teacher: Optional[nn.Module] = None

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.old_classes = set(self.seen_classes)
        total = self.old_classes | experience_classes(strategy.experience)
        self.weight = distillation_weight(len(self.old_classes), len(total))
        self.lambdas[strategy.clock.train_exp_counter] = self.weight
        self.teacher = None
        if self.old_classes:
            self.teacher = copy.deepcopy(strategy.model).eval()
            self.teacher.requires_grad_(False)

    def before_backward(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if self.teacher is None or self.weight == 0.0 or (not self.finetuning and in_finetuning(strategy)):
            return
        with torch.no_grad():
            teacher_logits = self.teacher(strategy.mb_x)
        kd = old_sample_distillation(
            strategy.mb_output, teacher_logits, strategy.mb_y, sorted(self.old_classes), self.temperature,
            all_samples=self.all_samples,
        )
        kd = self._share_of_global_batch(strategy, kd)
        if kd is not None:
            strategy.loss = (1.0 - self.weight) * strategy.loss + self.weight * kd

    def _share_of_global_batch(self, strategy: "SupervisedTemplate", kd: Optional[torch.Tensor]
                               ) -> Optional[torch.Tensor]:
        """Under DDP, this process's part of the KD term of the whole global batch (``None``: no old sample in it).

        The term is a mean over the old samples, so the processes' means, averaged by DDP, would weight the
        processes' old samples unequally, and a process without one would leave its classification loss unscaled
        while the others scale theirs: 2 processes would train another model than 1 process on the same global
        batch. The old samples are counted over all processes (one small all-reduce per iteration) and each
        process's mean is rescaled to its share; in one process the term is unchanged.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return kd
        local = int(distilled_samples(strategy.mb_y, sorted(self.old_classes), self.all_samples).sum())
        count = torch.tensor([float(local)], device=strategy.mb_output.device)
        dist.all_reduce(count)
        total = float(count.item())
        if total == 0:
            return None
        if kd is None:  # old samples elsewhere only: this process's classification loss is scaled as theirs
            return strategy.mb_output.new_zeros(())
        return kd * (local * dist.get_world_size() / total)

    def after_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.seen_classes |= experience_classes(strategy.experience)

    def after_training(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # After every after_training_exp callback (finetuning distils too): the copy is no longer needed.
        self.teacher = None



class WeightedLwFPlugin(LwFPlugin, supports_distributed=True):
    """``LwFPlugin`` whose KD term and classification loss are weighted ``lambda`` and ``1 - lambda``.

    Design: the stock plugin adds ``alpha * KD`` to ``strategy.loss`` in ``before_backward``. This subclass
    sets Avalanche's ``alpha`` to ``lambda`` at the start of every experience (so the stock KD computation,
    teacher copy and old-class bookkeeping are reused unchanged) and, in the same callback, scales the loss
    accumulated so far by ``1 - lambda``. Unlike the authors' term, every sample is distilled and the KL is
    averaged per sample (``batchmean``). ``lambdas[i]`` records lambda of training experience ``i``.

    Args:
        temperature: softmax temperature of the distillation (the paper uses 1).
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__(alpha=0.0, temperature=temperature)
        self.weight = 0.0
        self.lambdas: Dict[int, float] = {}

    def before_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        # LwF records the classes of each finished experience, so these are exactly the distilled classes.
        old = set().union(*self.lwf.prev_classes_by_task.values())
        total = old | experience_classes(strategy.experience)
        self.weight = distillation_weight(len(old), len(total))
        self.lwf.alpha = self.weight
        self.lambdas[strategy.clock.train_exp_counter] = self.weight

    def before_backward(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if self.weight == 0.0:  # first experience: no teacher, plain classification loss
            return
        kd = self.lwf(strategy.mb_x, strategy.mb_output, strategy.model)  # already multiplied by lambda
        strategy.loss = (1.0 - self.weight) * strategy.loss + kd
