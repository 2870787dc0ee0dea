"""The authors' class-balanced finetuning: after each task but the first, a few epochs on the memory only,
with the backbone frozen and a small learning rate."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.storage_policy import ExemplarsBuffer
from torch.utils.data import DataLoader, WeightedRandomSampler

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["BalancedFinetuningPlugin"]


class BalancedFinetuningPlugin(SupervisedPlugin, supports_distributed=True):
    """Finetunes the parameters named ``trainable`` on the rehearsal memory after each experience ``t > 0``.

    Samples are drawn with probability inversely proportional to their class frequency in the memory, so
    each epoch is class balanced even for an unbalanced buffer. A fresh AdamW is used, leaving the
    strategy's optimizer state untouched; all other parameters are frozen meanwhile and their
    ``requires_grad`` is restored afterwards. List it after the ``ReplayPlugin`` that fills ``storage_policy``
    (so the memory already holds the new classes) and before ``LwFPlugin`` (so the teacher is finetuned).

    Args:
        storage_policy: the replay memory (e.g. ``ReplayPlugin.storage_policy``).
        epochs: finetuning epochs per experience.
        lr: finetuning learning rate.
        batch_size: mini-batch size (``None``: the strategy's ``train_mb_size``).
        trainable: prefixes of the parameter names to train (``"head"``: the classifier of LocalityViT).
        weight_decay: AdamW weight decay.
        criterion: loss (``None``: the strategy's criterion).
    """

    def __init__(
        self,
        storage_policy: ExemplarsBuffer,
        epochs: int = 20,
        lr: float = 5e-5,
        batch_size: Optional[int] = None,
        trainable: Sequence[str] = ("head",),
        weight_decay: float = 0.0,
        criterion: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
    ) -> None:
        super().__init__()
        self.storage_policy = storage_policy
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.trainable = tuple(trainable)
        self.weight_decay = weight_decay
        self.criterion = criterion
        self.iterations = 0  # finetuning steps done so far (for tests and logs)

    def _loader(self, strategy: "SupervisedTemplate") -> DataLoader:
        memory = self.storage_policy.buffer
        labels = [int(t) for t in memory.targets]
        counts = Counter(labels)
        weights = torch.tensor([1.0 / counts[c] for c in labels], dtype=torch.double)
        return DataLoader(
            memory,
            batch_size=self.batch_size or strategy.train_mb_size,
            sampler=WeightedRandomSampler(weights, num_samples=len(memory), replacement=True),
            collate_fn=getattr(memory, "collate_fn", None),
        )

    def after_training_exp(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if strategy.clock.train_exp_counter == 0 or self.epochs <= 0 or len(self.storage_policy.buffer) == 0:
            return
        model = strategy.model
        params = dict(model.named_parameters())
        train = [p for n, p in params.items() if n.startswith(self.trainable)]
        if not train:
            raise ValueError(f"no parameter name starts with {self.trainable}; names look like {list(params)[:5]}")
        saved = {n: p.requires_grad for n, p in params.items()}
        for n, p in params.items():
            p.requires_grad_(n.startswith(self.trainable))
        optimizer = torch.optim.AdamW(train, lr=self.lr, weight_decay=self.weight_decay)
        criterion = self.criterion or strategy._criterion
        was_training = model.training
        model.train()
        try:
            loader = self._loader(strategy)
            for _ in range(self.epochs):
                for x, y, *_ in loader:
                    x, y = x.to(strategy.device), y.to(strategy.device)
                    optimizer.zero_grad()
                    criterion(model(x), y).backward()
                    optimizer.step()
                    self.iterations += 1
        finally:
            for n, p in params.items():
                p.requires_grad_(saved[n])
            model.train(was_training)
