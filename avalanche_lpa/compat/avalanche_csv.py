"""Avalanche's CSVLogger for a run that continues (avalanche-lib 0.5 / 0.6).

``CSVLogger.__init__`` opens ``training_results.csv`` and ``eval_results.csv`` with mode ``"w"``: a run that resumes
from its checkpoint and opens the logger again empties both files, and the rows of every experience before the
interruption are lost. :class:`AppendingCSVLogger` opens them for appending and writes each header only into a
file that has none yet; everything else (the rows, their columns) is Avalanche's.
"""
from __future__ import annotations

import os
from typing import IO

from avalanche.logging import CSVLogger

__all__ = ["AppendingCSVLogger"]

_TRAINING_HEADER = ("training_exp", "epoch", "training_accuracy", "val_accuracy", "training_loss", "val_loss")
_EVAL_HEADER = ("eval_exp", "training_exp", "eval_accuracy", "eval_loss", "forgetting")


def _open_appending(path: str, header: tuple) -> IO[str]:
    handle = open(path, "a")
    if handle.tell() == 0:  # a new (or empty) file: the header Avalanche writes, once
        print(*header, sep=",", file=handle, flush=True)
    return handle


class AppendingCSVLogger(CSVLogger):
    """:class:`avalanche.logging.CSVLogger` whose files grow across sessions of one run instead of being emptied.

    Args:
        log_folder: the folder of ``training_results.csv`` and ``eval_results.csv`` (created if missing).
    """

    def __init__(self, log_folder: str) -> None:
        # CSVLogger.__init__ is skipped on purpose (it truncates both files); its attributes are set as it sets them.
        super(CSVLogger, self).__init__()
        self.log_folder = log_folder
        os.makedirs(log_folder, exist_ok=True)
        self.training_file = _open_appending(os.path.join(log_folder, "training_results.csv"), _TRAINING_HEADER)
        self.eval_file = _open_appending(os.path.join(log_folder, "eval_results.csv"), _EVAL_HEADER)
        self.training_exp_id = None
        self.in_train_phase = None
        self.val_acc, self.val_loss = 0, 0
