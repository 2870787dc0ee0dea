"""Follows a run's config through the package, call by call: which files it visits, how often it goes back.

Runs ``load_config`` + ``run`` (and a resume of it) on a tiny synthetic benchmark under ``sys.setprofile`` and
records every call of a function of the package that receives the config, one of its sections or the strategy's
options (compared by value, so that copies and the flat ``**options`` of ``build_strategy`` count too).
Prints, for a fresh run and for a resume:

* files: the distinct files of the package the config passes through;
* moves: calls that take it to another file than the previous call's;
* back: moves to a file it had already left;
* up: moves from a lower room to a higher one (layers, data < models < plugins, metrics < training < config <
  runner, report < cli; experiment in older checkouts);
* validations: how often the config was checked against the schema.

    python benchmarks/config_trace.py            # about 30 s on 2 CPU cores
    python benchmarks/config_trace.py --route    # also the files in the order the config visits them

It reads only ``load_config`` and ``run``, so the same script measures an older checkout too (run it from there).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Set

os.environ.setdefault("OMP_NUM_THREADS", "1")

import avalanche_lpa  # noqa: E402

try:  # since the runner was rebuilt: the config package, the typed RunConfig, the runner package
    from avalanche_lpa.config import load_config  # noqa: E402
    from avalanche_lpa.config import validation as config_module  # noqa: E402
    from avalanche_lpa.runner import RunInterrupted, run  # noqa: E402
except ImportError:  # an older checkout: experiment/config.py and experiment/run.py, the config a dict
    from avalanche_lpa.experiment import config as config_module  # noqa: E402
    from avalanche_lpa.experiment.config import load_config  # noqa: E402
    from avalanche_lpa.experiment.run import RunInterrupted, run  # noqa: E402

PACKAGE = Path(avalanche_lpa.__file__).resolve().parent
RANK = {"layers": 0, "data": 0, "compat": 0, "files": 0, "timing": 0, "configs": 0, "errors": 0, "version": 0,
        "names": 0, "models": 1, "plugins": 2, "metrics": 2, "distributed": 2, "training": 3, "config": 4,
        "experiment": 5, "runner": 5, "report": 5, "cli": 6}
#: The files that do the work of validation, before and after the config package.
VALIDATION_FILES = ("config.py", "validation.py")
TINY = "{img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 2, num_heads: 9}"
SETTINGS = ["data.dataset=synthetic", "data.n_experiences=2", "model.preset=tiny", f"model.overrides={TINY}",
            "strategy.name=replay", "strategy.mem_size=16", "strategy.train_mb_size=16", "evaluation.progress_bar=false",
            "evaluation.locality_probe_size=8", "evaluation.attention_maps=0", "output.plots=false", "device=cpu"]


def _room(path: Path) -> str:
    part = path.relative_to(PACKAGE).parts[0]
    return part[:-3] if part.endswith(".py") else part


class Tracer:
    """Records the package files whose functions receive one of the watched mappings (by value), in call order."""

    def __init__(self) -> None:
        self.watched: List[Dict[str, Any]] = []
        self.files: List[Path] = []
        self.validations = 0
        self._work = "_check_config" if hasattr(config_module, "_check_config") else "validate"

    def watch(self, config: Any) -> None:
        """The config, its sections and the strategy's options (a dict and its sub-dicts in older checkouts; the
        typed RunConfig, its section objects and its StrategyOptions since)."""
        if isinstance(config, dict):
            options = {k: v for k, v in config["strategy"].items() if k != "name"}
            self.watched = [dict(config), *(dict(v) for v in config.values() if isinstance(v, dict) and v), options]
            return
        sections = [getattr(config, item.name) for item in dataclasses.fields(config)]
        options = dict(config.strategy)
        self.watched = [config, *(s for s in sections if dataclasses.is_dataclass(s)), options]

    def _seen(self, value: Any) -> bool:
        if isinstance(value, dict):
            return bool(value) and any(value == watched for watched in self.watched)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return any(value is watched or (type(value) is type(watched) and value == watched)
                       for watched in self.watched)
        return False

    def __call__(self, frame, event, arg) -> None:
        if event != "call":
            return
        code = frame.f_code
        path = Path(code.co_filename)
        if PACKAGE not in path.parents:
            return
        if code.co_name.startswith("__"):  # reading a typed config (config.strategy["lr"]) is a dict lookup, no call
            return
        if code.co_name == self._work and path.name in VALIDATION_FILES:
            self.validations += 1
        count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & 0x08)  # with **kwargs
        arguments = [frame.f_locals.get(name) for name in code.co_varnames[:count]]
        if any(self._seen(value) for value in arguments):
            self.files.append(path)
        elif code.co_name == "validate" and path.name in VALIDATION_FILES:
            self.files.append(path)  # validate(raw) takes a dict that becomes the config

    def counts(self) -> Dict[str, int]:
        moves = back = up = 0
        left: Set[Path] = set()
        for before, after in zip(self.files, self.files[1:]):
            if before == after:
                continue
            moves += 1
            left.add(before)
            back += after in left
            up += RANK.get(_room(after), 0) > RANK.get(_room(before), 0)
        return dict(files=len(set(self.files)), moves=moves, back=back, up=up, validations=self.validations)


def _traced(fn, tracer: Tracer):
    sys.setprofile(tracer)
    try:
        return fn()
    finally:
        sys.setprofile(None)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Tracer()

        def fresh_run():
            config = load_config(None, SETTINGS + [f"output.dir={tmp}/fresh"])
            fresh.watch(config)
            return run(config)

        _traced(fresh_run, fresh)
        config = load_config(None, SETTINGS + [f"output.dir={tmp}/cut"])
        try:
            run(config, stop_after=1)
        except RunInterrupted:
            pass
        resumed = Tracer()

        def resume_run():
            again = load_config(None, SETTINGS + [f"output.dir={tmp}/cut"])
            resumed.watch(again)
            return run(again, resume=True)

        _traced(resume_run, resumed)
    for label, tracer in (("fresh run", fresh), ("resume", resumed)):
        counts = tracer.counts()
        print(f"{label:10s} " + ", ".join(f"{key} {value}" for key, value in counts.items()))
        if "--route" in sys.argv:
            route = [str(path.relative_to(PACKAGE)) for i, path in enumerate(tracer.files)
                     if i == 0 or path != tracer.files[i - 1]]
            print("           " + " -> ".join(route))


if __name__ == "__main__":
    main()
