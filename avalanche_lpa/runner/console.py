"""What a run prints: an opening block, labelled progress bars, one line per epoch, one summary per experience.

The console says what runs, where, how far along and what came out. :class:`RunCard` is the opening block
(model, device, data and the folder its files come from, experiences, strategy, fresh or resumed, output folder),
printed before training and written at the top of ``log.txt``. :class:`ConsoleLogger` labels every progress bar
with the experience (i/n), the phase (training, finetuning, evaluation) and the epoch counted from 1 out of its
total, with tqdm's ETA; after each epoch it prints one line (loss, accuracy, learning rate). Every metric (per
layer, per head, per image) still goes to the file loggers (``log.txt``, TensorBoard, CSV, wandb);
``evaluation.verbose`` (``--verbose``) also prints them. :class:`RunLog` is ``log.txt``: Avalanche's text logger
with a timestamp on every line.
"""
from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, TextIO, Tuple

from avalanche.logging import InteractiveLogger, TextLogger
from tqdm import tqdm

from ..plugins import in_finetuning
from ..plugins.finetune import BalancedFinetuningPlugin
from ..timing import format_phase_times

__all__ = [
    "ConsoleLogger", "RunCard", "RunLog", "evaluation_summary", "experience_summary", "position_label", "timestamp",
]

_LOCALITY = "Locality_Stream/eval_phase/test_stream"
# (metric name, label) of the per-epoch line, in this order.
#: The metrics of an epoch's line, their words and formats: loss and accuracy to a fixed 4 decimals, so that the
#: lines of a run align and 0.67 is not read as less precise than 0.6545; the lr in its own scale (5e-05).
_EPOCH_METRICS = (("Loss_Epoch", "loss", ".4f"), ("Top1_Acc_Epoch", "accuracy", ".4f"), ("LR_Epoch", "lr", ".4g"))


def timestamp() -> str:
    """Now, to the second, in local time: the prefix of ``log.txt``'s lines."""
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class RunCard:
    """What a run is, as its opening block says it (the console, the top of ``log.txt``).

    Attributes:
        name: the run's name.
        model: the model's registered name (``lpa_vit_tiny``, ``timm:vit_tiny_patch16_224``) and attention.
        parameters: the network's parameter count.
        device: where it trains, with the number of processes.
        data: the dataset and where its files come from.
        split: experiences x classes (and images when subsampled).
        strategy: the strategy and its main options.
        start: ``fresh``, or where a resumed run continues.
        output: the run folder.
        processes: whether another number of processes would run the same experiment (empty: no line).
    """

    name: str
    model: str
    parameters: int
    device: str
    data: str
    split: str
    strategy: str
    start: str
    output: str
    processes: str = ""

    def lines(self) -> List[str]:
        """The block, one ``label  value`` line each."""
        rows: Sequence[Tuple[str, str]] = (
            ("run", f"{self.name} ({self.start})"),
            ("model", f"{self.model}, {self.parameters:,} parameters"),
            ("device", self.device),
            ("data", self.data),
            ("split", self.split),
            ("strategy", self.strategy),
            ("processes", self.processes),
            ("output", self.output),
        )
        return [f"{label:<9} {value}" for label, value in rows if value]

    def text(self) -> str:
        return "\n".join(self.lines())


def _finetuning(strategy: Any) -> Optional[BalancedFinetuningPlugin]:
    return next((p for p in getattr(strategy, "plugins", []) if isinstance(p, BalancedFinetuningPlugin)), None)


def position_label(strategy: Any, total: int) -> str:
    """Where a strategy is: ``exp 2/5 · train epoch 3/10``, ``exp 2/5 · finetune epoch 1/20``, ``exp 2/5 · eval 4/5``
    (experiences and epochs counted from 1)."""
    if strategy.is_training:
        experience = strategy.experience.current_experience + 1
        finetuning = _finetuning(strategy) if in_finetuning(strategy) else None
        if finetuning is not None:
            return f"exp {experience}/{total} · finetune epoch {finetuning.epoch + 1}/{finetuning.epochs}"
        return f"exp {experience}/{total} · train epoch {strategy.clock.train_exp_epochs + 1}/{strategy.train_epochs}"
    trained = strategy.clock.train_exp_counter
    stream = list(getattr(strategy, "current_eval_stream", None) or [])
    evaluation = f"eval {strategy.experience.current_experience + 1}/{len(stream) or '?'}"
    return f"exp {trained}/{total} · {evaluation}" if trained else evaluation


class ConsoleLogger(InteractiveLogger):
    """Avalanche's progress bars, each labelled with where the run is (:func:`position_label`), and one line per
    training or finetuning epoch (loss, accuracy, learning rate, its time). Evaluation shows its bars only: the run
    prints one summary per experience (:func:`experience_summary`).

    Args:
        total: the experiences of the run (the ``n`` of ``exp i/n``).
        bars: show progress bars: ``None`` on a terminal only (not in a log file or pipe: a job's output stays one
            line per epoch), ``True`` always, ``False`` never; the epoch lines are printed either way.
        verbose: print every metric after each epoch and evaluation, as Avalanche's ``InteractiveLogger``.
        file: where to print (standard output).
    """

    def __init__(self, total: int, *, bars: Optional[bool] = None, verbose: bool = False,
                 file: Optional[TextIO] = None) -> None:
        super().__init__()
        self.file = file or sys.stdout
        self.total = total
        self.bars = bars
        self.verbose = verbose
        self._epoch_started: Optional[datetime.datetime] = None
        self._epoch_label = ""

    # -- progress bars -------------------------------------------------------------------------------------------
    @property
    def _progress(self) -> tqdm:
        if self._pbar is None:
            # leave=False: a finished bar gives way to its epoch line; disable=None: no bars in a file or pipe
            self._pbar = tqdm(leave=False, position=0, file=self.file, dynamic_ncols=True,
                              disable={None: None, True: False, False: True}[self.bars])
        return self._pbar

    def before_training_epoch(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        self._epoch_started = datetime.datetime.now()
        # Read here: by the epoch's end the clock and the finetuning plugin count it as done.
        self._epoch_label = position_label(strategy, self.total)
        self._progress.set_description_str(self._epoch_label, refresh=False)
        super().before_training_epoch(strategy, metric_values, **kwargs)

    def before_eval_exp(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        self._progress.set_description_str(position_label(strategy, self.total), refresh=False)
        self._progress.total = len(strategy.dataloader)

    # -- lines ---------------------------------------------------------------------------------------------------
    def before_training(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        pass  # no "-- >> Start of training phase << --": the opening block and the labels say it

    def after_training(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        pass

    def before_training_exp(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        experience = strategy.experience
        classes = len(getattr(experience, "classes_in_this_experience", []) or [])
        images = len(experience.dataset)
        print(f"exp {experience.current_experience + 1}/{self.total}: training on {classes} new classes, "
              f"{images:,} images", file=self.file, flush=True)

    def after_training_epoch(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        self._end_progress()
        latest = {name.split("/")[0]: value for name, _, value in self.metric_vals.values()}
        parts = [f"{name} {latest[metric]:{spec}}" for metric, name, spec in _EPOCH_METRICS
                 if isinstance(latest.get(metric), (int, float))]
        if self._epoch_started is not None:
            parts.append(f"{(datetime.datetime.now() - self._epoch_started).total_seconds():.0f}s")
        print(f"{self._epoch_label}: {', '.join(parts)}", file=self.file, flush=True)
        if self.verbose:
            TextLogger.print_current_metrics(self)
        self.metric_vals = {}

    def print_current_metrics(self) -> None:
        if self.verbose:
            TextLogger.print_current_metrics(self)

    def before_eval(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        pass

    def after_eval_exp(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        self._end_progress()
        if not self.verbose:
            self.metric_vals = {}

    def after_eval(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        if self.verbose:
            TextLogger.print_current_metrics(self)
        self.metric_vals = {}

    def on_checkpoint_resume(self) -> None:
        pass  # Avalanche prints "[ConsoleLogger] Resuming from checkpoint ..."; the opening block says it

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # no file (Avalanche's pickles its name and reopens it): the runner sets one
        state.update(file=None, _pbar=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.file = sys.stdout


class _TimestampedLines:
    """A text file that puts :func:`timestamp` in front of every line written to it."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self._at_line_start = True

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def closed(self) -> bool:
        return self.file.closed

    def write(self, text: str) -> int:
        out = []
        for piece in text.splitlines(keepends=True):
            if self._at_line_start and piece.strip():
                out.append(f"[{timestamp()}] ")
            out.append(piece)
            self._at_line_start = piece.endswith("\n")
        return self.file.write("".join(out))

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class RunLog(TextLogger):
    """``log.txt``: every metric after each epoch and evaluation (Avalanche's ``TextLogger``), each line timestamped.

    Args:
        file: the open log file (:func:`~.folder.open_log`).
        total: the experiences of the run (the ``n`` of ``exp i/n``).
        header: lines written first (the run's opening block).
    """

    def __init__(self, file: TextIO, total: int, header: Sequence[str] = ()) -> None:
        super().__init__(_TimestampedLines(file))
        self.total = total
        for line in header:
            print(line, file=self.file)
        self.file.flush()

    def before_training_epoch(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        super().before_training_epoch(strategy, metric_values, **kwargs)
        self._epoch_label = position_label(strategy, self.total)

    def after_training_epoch(self, strategy: Any, metric_values: List[Any], **kwargs: Any) -> None:
        print(f"{getattr(self, '_epoch_label', 'epoch')} ended", file=self.file)
        self.print_current_metrics()
        self.metric_vals = {}

    def _on_exp_start(self, strategy: Any) -> None:
        if strategy.is_training:
            print(f"exp {strategy.experience.current_experience + 1}/{self.total}: training", file=self.file)
        else:
            print(f"{position_label(strategy, self.total)}: evaluation", file=self.file)

    def on_checkpoint_resume(self) -> None:
        pass  # the runner writes the resumed run's opening block instead

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # no file: an unpickled log is replaced by the resumed run's own
        state["file"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def _number(metrics: Mapping[str, Any], name: str) -> Optional[float]:
    value = metrics.get(name)
    return float(value) if isinstance(value, (int, float)) else None


def _parts(first: str, *numbers: Tuple[str, Optional[float]]) -> List[str]:
    """``first``, then each ``(template, value)`` filled in, those without a value left out."""
    return [first] + [template.format(value) for template, value in numbers if value is not None]


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
    exemplars: Optional[int] = None,
) -> str:
    """One line after experience ``finished`` (1-based) of ``total``: accuracy on the seen classes, stream
    forgetting, mean attention distance, the distinct exemplars in memory, the experience's time and the run's ETA
    (at its mean pace so far).

    Args:
        metrics: the evaluator's last metrics (``strategy.evaluator.get_last_metrics()``).
        finished: experiences finished so far.
        total: experiences in the run.
        seconds: wall time of the experience just finished (training and evaluation).
        run_seconds: wall time of the run's finished experiences.
        sizes: test images per experience (weights of the seen accuracy); ``None``: equal weights.
        phase_times: the experience's seconds per phase (``results.json``'s ``phase_times_s`` entry): adds a
            second line, where the time went.
        exemplars: distinct exemplars in the memories of all processes (the run card's ``distinct_exemplars``).
    """
    parts = _parts(
        f"experience {finished}/{total}",
        ("accuracy {:.3f} on the seen classes", _seen_accuracy(metrics, finished, sizes)),
        ("forgetting {:.3f}", _number(metrics, "StreamForgetting/eval_phase/test_stream")),
        ("locality {:.2f} patches", _number(metrics, _LOCALITY)),
        ("{:,} exemplars in memory", exemplars),
    )
    parts.append(f"{_duration(seconds)} for it")
    if finished < total:
        parts.append(f"ETA {_duration(run_seconds / finished * (total - finished))}")
    else:
        parts.append(f"run {_duration(run_seconds)}")
    line = ", ".join(parts)
    if phase_times:
        line += "\n\ttime " + format_phase_times(phase_times)
    return line


def evaluation_summary(results: Mapping[str, Any]) -> str:
    """The line ``--eval-only`` prints: the final model's accuracy on the whole test stream and its locality,
    beside the last accuracy the run reported (``results``: what :func:`~.evaluate.evaluate_saved_run` returns)."""
    metrics, original = results["metrics"], results.get("original_summary") or {}
    parts = _parts(
        f"re-evaluated {results['run']}",
        ("accuracy {:.4f} on the whole test stream", _number(metrics, "Top1_Acc_Stream/eval_phase/test_stream/Task000")),
        ("locality {:.2f} patches", _number(metrics, _LOCALITY)),
        ("the run reported last accuracy {:.4f}", _number(original, "last_accuracy")),
    )
    return ", ".join(parts) + "; wrote eval_results.json"
