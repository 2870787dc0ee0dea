"""What a run prints: progress bars, one short line per epoch, one summary per experience.

Every metric (per layer, per head, per image) still goes to the file loggers (``log.txt``, TensorBoard, CSV,
wandb); the console keeps what a person watching a long run needs: is the loss going down, what is the
accuracy, how local is the attention, and when will it end. ``evaluation.verbose`` (``--verbose``) prints every
metric instead, as Avalanche's ``InteractiveLogger`` does.
"""
from __future__ import annotations

import datetime
from typing import Any, List, Mapping, Optional, Sequence

from avalanche.logging import InteractiveLogger

from ..timing import format_phase_times

__all__ = ["ConsoleLogger", "experience_summary"]

# (metric name, label) of the per-epoch line, in this order.
_EPOCH_METRICS = (("Loss_Epoch", "loss"), ("Top1_Acc_Epoch", "accuracy"), ("LR_Epoch", "lr"))


class ConsoleLogger(InteractiveLogger):
    """Avalanche's progress bars with one line per training epoch (loss, accuracy, learning rate); evaluation
    shows only its progress bars, since the run prints one summary per experience (:func:`experience_summary`)."""

    def print_current_metrics(self) -> None:
        latest = {name.split("/")[0]: value for name, _, value in self.metric_vals.values()}
        parts = [f"{label} {latest[name]:.4g}" for name, label in _EPOCH_METRICS
                 if isinstance(latest.get(name), (int, float))]
        if parts:
            print("\t" + ", ".join(parts), file=self.file)

    def _on_exp_start(self, strategy: Any) -> None:
        if strategy.is_training:  # one "Starting eval on experience i" line per seen experience is noise
            super()._on_exp_start(strategy)

    def before_eval(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        pass

    def after_eval_exp(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        self._end_progress()
        self.metric_vals = {}

    def after_eval(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        self.metric_vals = {}


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def _seen_accuracy(metrics: Mapping[str, Any], seen: int, sizes: Optional[Sequence[int]]) -> Optional[float]:
    """Accuracy on the test images of the first ``seen`` experiences (weighted by their sizes)."""
    values = []
    for name, value in metrics.items():
        if name.startswith("Top1_Acc_Exp/eval_phase/test_stream/") and "/Exp" in name:
            index = int(name.rsplit("/Exp", 1)[1])
            if index < seen:
                values.append((index, float(value)))
    if len(values) != seen:
        return None
    weights = [sizes[i] if sizes else 1 for i, _ in values]
    return sum(w * v for w, (_, v) in zip(weights, values)) / sum(weights)


def experience_summary(
    metrics: Mapping[str, Any],
    finished: int,
    total: int,
    seconds: float,
    run_seconds: float,
    sizes: Optional[Sequence[int]] = None,
    phase_times: Optional[Mapping[str, float]] = None,
) -> str:
    """One line after experience ``finished`` (1-based) of ``total``: accuracy on the seen classes, stream
    forgetting, mean attention distance, the experience's time and the run's ETA (at its mean pace so far).

    Args:
        metrics: the evaluator's last metrics (``strategy.evaluator.get_last_metrics()``).
        finished: experiences finished so far.
        total: experiences in the run.
        seconds: wall time of the experience just finished (training and evaluation).
        run_seconds: wall time of the run's finished experiences.
        sizes: test images per experience (weights of the seen accuracy); ``None``: equal weights.
        phase_times: the experience's seconds per phase (``results.json``'s ``phase_times_s`` entry): adds a
            second line, where the time went.
    """
    parts = [f"experience {finished}/{total}"]
    accuracy = _seen_accuracy(metrics, finished, sizes)
    if accuracy is not None:
        parts.append(f"accuracy {accuracy:.3f} on the seen classes")
    forgetting = metrics.get("StreamForgetting/eval_phase/test_stream")
    if isinstance(forgetting, (int, float)):
        parts.append(f"forgetting {forgetting:.3f}")
    locality = metrics.get("Locality_Stream/eval_phase/test_stream")
    if isinstance(locality, (int, float)):
        parts.append(f"locality {locality:.2f} patches")
    parts.append(f"{_duration(seconds)} for it")
    if finished < total:
        parts.append(f"ETA {_duration(run_seconds / finished * (total - finished))}")
    else:
        parts.append(f"run {_duration(run_seconds)}")
    line = ", ".join(parts)
    if phase_times:
        line += "\n\ttime " + format_phase_times(phase_times)
    return line
