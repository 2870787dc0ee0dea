"""Seconds per phase of a run (training, finetuning, herding, evaluation, ...), exclusive of nested phases.

The one place both plugins and metrics time their work from (depends on no other room, as ``files.py``):
:class:`PhaseTimes` keeps a stack of running phases, so a phase started inside another (the locality probe inside
the evaluation, finetuning inside training) is charged to itself only and the phases add up to no more than the
wall time. :func:`timed` charges a block to the :class:`PhaseTimes` a strategy carries (on a plugin, see
:class:`~avalanche_lpa.plugins.PhaseTimerPlugin`) and does nothing when it carries none.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Dict, Iterator, List, Optional

__all__ = ["PHASES", "PhaseTimes", "find_phase_times", "format_phase_times", "timed"]

#: The phases, in the order reports list them. ``train`` is what the training loop spends outside the other
#: phases (forward, backward, optimizer, callbacks, per-experience setup); ``data_wait`` the time the training
#: loops (finetuning's included) waited for their loader to yield a batch.
PHASES = (
    "train", "data_wait", "finetune", "memory_update", "eval", "locality_probe", "attention_maps", "checkpoint",
)


class PhaseTimes:
    """Exclusive seconds per phase: while a nested phase runs, the phase around it does not count.

    Phases are opened with :meth:`start` and closed with :meth:`stop` (or the :meth:`phase` context). Closing a
    phase that is not the innermost one also closes those opened inside it (a loop left by ``break`` or an
    exception), so the stack cannot grow without bound; closing one that is not open does nothing.
    """

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._stack: List[List[Any]] = []  # [name, since]: since = when it last started counting
        self._origin = time.perf_counter()

    def reset(self) -> None:
        """Zeroes every phase and the wall clock (open phases stay open and count from now)."""
        now = time.perf_counter()
        self.seconds = dict.fromkeys(PHASES, 0.0)
        for entry in self._stack:
            entry[1] = now
        self._origin = now

    def start(self, name: str) -> None:
        now = time.perf_counter()
        if self._stack:  # pause the enclosing phase
            outer = self._stack[-1]
            self.seconds[outer[0]] = self.seconds.get(outer[0], 0.0) + now - outer[1]
        self._stack.append([name, now])

    def stop(self, name: str) -> None:
        if not any(entry[0] == name for entry in self._stack):
            return
        now = time.perf_counter()
        while True:
            inner, since = self._stack.pop()
            self.seconds[inner] = self.seconds.get(inner, 0.0) + now - since
            if self._stack:  # the enclosing phase was paused while ``inner`` ran: it counts from now
                self._stack[-1][1] = now
            if inner == name:
                break

    def is_open(self, name: str) -> bool:
        return bool(self._stack) and self._stack[-1][0] == name

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def snapshot(self) -> Dict[str, float]:
        """Seconds per phase since the last :meth:`reset` (open phases up to now) and ``wall``, the time since it."""
        now = time.perf_counter()
        seconds = dict(self.seconds)
        for name, since in self._stack:
            seconds[name] = seconds.get(name, 0.0) + now - since
        seconds["wall"] = now - self._origin
        return seconds

    def __getstate__(self) -> Dict[str, Any]:
        # A checkpoint taken mid-phase must not resume with a stack whose clock started in another process.
        return {"seconds": dict(self.seconds), "_stack": [], "_origin": 0.0}


def find_phase_times(strategy: Any) -> Optional[PhaseTimes]:
    """The :class:`PhaseTimes` of the first plugin of ``strategy`` that has one (``phase_times``), else ``None``."""
    for plugin in getattr(strategy, "plugins", None) or ():
        times = getattr(plugin, "phase_times", None)
        if isinstance(times, PhaseTimes):
            return times
    return None


def timed(strategy: Any, name: str) -> contextlib.AbstractContextManager:
    """A context that charges its block to phase ``name`` of ``strategy``'s timer (no-op without a timer)."""
    times = find_phase_times(strategy)
    return times.phase(name) if times is not None else contextlib.nullcontext()


def format_phase_times(seconds: Dict[str, float]) -> str:
    """One line: the wall time, then each phase's seconds and share of it (phases that took no time left out)."""
    wall = seconds.get("wall", 0.0)
    parts = [
        f"{name.replace('_', ' ')} {seconds[name]:.1f} s ({100 * seconds[name] / wall:.0f}%)" if wall > 0 else
        f"{name.replace('_', ' ')} {seconds[name]:.1f} s"
        for name in PHASES if seconds.get(name, 0.0) >= 0.05
    ]
    return f"{wall:.1f} s: " + ", ".join(parts) if parts else f"{wall:.1f} s"
