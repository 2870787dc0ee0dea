"""Where a run's time goes: training, loader waits and evaluation, timed from the strategy's callbacks."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict

from avalanche.core import SupervisedPlugin

from ..timing import PhaseTimes
from .finetune import in_finetuning

if TYPE_CHECKING:
    from avalanche.training.templates import SupervisedTemplate

__all__ = ["PhaseTimerPlugin", "install_phase_timer"]


class PhaseTimerPlugin(SupervisedPlugin, supports_distributed=True):
    """Times training, data-loading waits and evaluation into :attr:`phase_times` (a :class:`PhaseTimes`).

    * ``train``: ``before_training`` to ``after_training``, less every phase nested in it.
    * ``data_wait``: from ``before_training_epoch`` / ``after_training_iteration`` to the next
      ``before_training_iteration``, which Avalanche fires once the loader yielded the batch (and moved it to
      the device); the finetuning epochs run the same loop, so their waits count here too.
    * ``eval``: ``before_eval`` to ``after_eval``, less the locality probe and attention maps, which time
      themselves (:func:`~avalanche_lpa.timing.timed`), as do finetuning, the memory update and the runner's
      checkpoint.

    :meth:`snapshot` adds two numbers that are not phases, for projecting a run to more epochs: ``epochs``, the
    seconds inside the experience's own training epochs (finetuning's not included; their loader waits included),
    and ``epoch_waits``, those epochs' loader waits. The rest of ``train`` and ``data_wait`` is per-experience
    setup (dataset adaptation, loader, optimizer), which does not grow with epochs.

    List it last (:func:`install_phase_timer`): its ``after_*`` callbacks then close their phase after every
    other plugin's, so those plugins' work (the evaluator's metrics, finetuning, herding) lands in a phase and not
    in the loader wait; its ``before_training_iteration`` comes after the other plugins' (per-iteration lr
    schedule, LPA warm-up), which the wait therefore includes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.phase_times = PhaseTimes()
        self._epochs = [0.0, 0.0]  # seconds in training epochs, their loader waits
        self._epoch_start = None  # (snapshot of wall, snapshot of data_wait) at the current epoch's start

    def reset(self) -> None:
        self.phase_times.reset()
        self._epochs = [0.0, 0.0]
        self._epoch_start = None

    def snapshot(self) -> Dict[str, float]:
        """Seconds per phase since the last :meth:`reset`, with ``wall``, ``epochs`` and ``epoch_waits``."""
        return {**self.phase_times.snapshot(), "epochs": self._epochs[0], "epoch_waits": self._epochs[1]}

    def _clock(self):
        seconds = self.phase_times.snapshot()
        return seconds["wall"], seconds["data_wait"]

    def before_training(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.phase_times.start("train")

    def after_training(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.phase_times.stop("train")

    def _wait(self) -> None:
        if not self.phase_times.is_open("data_wait"):  # an epoch left by `break` did not close its wait
            self.phase_times.start("data_wait")

    def before_training_epoch(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        if not in_finetuning(strategy):
            self._epoch_start = self._clock()
        self._wait()  # the first batch: the loader's iterator (its workers) starts

    def after_training_iteration(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self._wait()

    def before_training_iteration(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.phase_times.stop("data_wait")

    def after_training_epoch(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.phase_times.stop("data_wait")  # the loader's final, empty fetch
        if self._epoch_start is not None and not in_finetuning(strategy):
            wall, waited = self._clock()
            self._epochs[0] += wall - self._epoch_start[0]
            self._epochs[1] += waited - self._epoch_start[1]
            self._epoch_start = None

    def before_eval(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.phase_times.start("eval")

    def after_eval(self, strategy: "SupervisedTemplate", **kwargs) -> None:
        self.phase_times.stop("eval")


def install_phase_timer(strategy: "SupervisedTemplate") -> PhaseTimerPlugin:
    """Adds a fresh :class:`PhaseTimerPlugin` as the last plugin of ``strategy`` (replacing any it had: a
    resumed checkpoint carries the one it was saved with) and returns it."""
    strategy.plugins[:] = [p for p in strategy.plugins if not isinstance(p, PhaseTimerPlugin)]  # in place
    timer = PhaseTimerPlugin()
    strategy.plugins.append(timer)
    return timer
