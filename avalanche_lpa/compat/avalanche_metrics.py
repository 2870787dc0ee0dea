"""Avalanche's accuracy-matrix metric, fixed (avalanche-lib 0.5.0 and 0.6.0)."""
from __future__ import annotations

from avalanche.evaluation.metric_results import MetricResult
from avalanche.evaluation.metrics import AccuracyMatrixPluginMetric

__all__ = ["AccuracyMatrix"]


class AccuracyMatrix(AccuracyMatrixPluginMetric):
    """Avalanche's ``EvalStream/Acc_Matrix`` metric with two fixes (needed in avalanche-lib 0.5.0 and 0.6.0).

    * Upstream indexes the row by the number of ``train`` calls, which is ``None`` before the first one, so
      ``strategy.eval`` before training (or a periodic eval with ``do_initial``) raised ``TypeError``. Such
      evaluations have no row here and emit nothing.
    * Upstream emits the same tensor every time and later fills it in place, so the whole metric history
      showed the final matrix; each emitted value is a copy here.
    """

    def after_eval_exp(self, strategy) -> MetricResult:
        if self.num_training_steps is None:
            self._accuracy.reset()
            return None
        return super().after_eval_exp(strategy)

    def after_eval(self, strategy) -> MetricResult:
        if self.num_training_steps is None:
            return None
        return super().after_eval(strategy)

    def _package_result(self, strategy) -> MetricResult:
        values = super()._package_result(strategy)
        for value in values:
            value.value = value.value.clone()
        return values
