"""The command line: ``avalanche-lpa`` / ``python -m avalanche_lpa`` and ``experiments/split_*.py``.

Parse, build the config, run, report errors in one line. Exit status: 0 success, 2 bad input (config,
flags, device, data, output folder, a folder in use, a damaged run file), 1 a run that failed (diverged, or
a file could not be written: a full disk), 75 preempted (SIGTERM or SIGUSR1: checkpointed, continue with
--resume), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from ..configs import CONFIG_DIR, config_path, descriptions
from ..distributed import shutdown_distributed
from ..files import WriteError
from ..models import ATTN_TYPES, TIMM_PREFIX
from ..plugins import DivergenceError
from ..training import STRATEGIES
from .checkpoint import CheckpointError
from .compare import compare
from .config import ConfigError, dump_config, load_config
from .midway import PREEMPTED_EXIT, Preempted
from ..data import DatasetNotFoundError
from .run import evaluate_saved_run, output_dir, read_run_yaml, run
from .timm_model import select_model

__all__ = ["build_parser", "config_from_args", "main", "console"]


MODEL_CHOICES = f"{{{','.join(ATTN_TYPES)},timm:NAME}}"


def model_choice(value: str) -> str:
    """An attention type of the LocalityViT family or ``timm:<name>`` (the name is checked with the config)."""
    if value in ATTN_TYPES or (value.startswith(TIMM_PREFIX) and len(value) > len(TIMM_PREFIX)):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: choose {', '.join(ATTN_TYPES)} or timm:<name> (a timm model)")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's examples as written and shows a default only where there is one to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _config_label(path: Path) -> str:
    """A shipped config by its name, any other file by its path."""
    path = Path(path)
    return path.stem if path.parent.resolve() == CONFIG_DIR else str(path)


def build_parser(description: str, default_config: Path, imagenet: bool = False,
                 prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description, formatter_class=_HelpFormatter)
    parser.add_argument("--config", default=None, metavar="NAME|FILE",
                        help=f"a shipped config by name (avalanche-lpa configs lists them) or a YAML file; default: "
                             f"{_config_label(default_config)}; with --resume / --eval-only: the run's config.yaml")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (file, flags and --set values, defaults filled in) as YAML and exit")
    parser.add_argument("--model", type=model_choice, metavar=MODEL_CHOICES,
                        help="attention type (model.attn_type), or timm:<name> for any timm model (model.name)")
    parser.add_argument("--strategy", choices=STRATEGIES, metavar="NAME",
                        help=f"strategy (strategy.name): {', '.join(STRATEGIES)}; config options it does not take are dropped")
    parser.add_argument("--seed", type=int, help="seed (also of the class order when none is given)")
    parser.add_argument("--data-root", help="dataset folder (data.root)")
    parser.add_argument("--output", help="run folder (output.dir); {name} {model} {strategy} {seed} are filled in")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output from its checkpoint, with the run's own config.yaml")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the run in --output afresh, deleting the files an earlier run wrote there")
    parser.add_argument("--eval-only", action="store_true", help="re-evaluate the finished run in --output")
    parser.add_argument("--verbose", action="store_true",
                        help="print every metric (per layer, per head) after each epoch and evaluation "
                             "(evaluation.verbose); by default one line per epoch and one summary per experience")
    parser.add_argument("--no-download", action="store_true",
                        help="never download a missing dataset (data.download: false)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set strategy.lr=1e-3 (repeatable; values are YAML)")
    group = parser.add_argument_group("comparison")
    group.add_argument("--compare", action="store_true", help="run every --models x --strategies x --seeds")
    group.add_argument("--models", nargs="+", type=model_choice, metavar=MODEL_CHOICES, default=list(ATTN_TYPES),
                       help="models to compare: attention types and timm:<name> specs")
    group.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=None, metavar="NAME",
                       help="strategies to compare (names as --strategy)")
    group.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the config's seed")
    group.add_argument("--no-joint", action="store_true", help="skip the joint-training control runs")
    if imagenet:
        parser.add_argument("--class-list", help="file with one WordNet id per line (data.class_list)")
    parser.set_defaults(default_config=default_config)
    return parser


def _flag_values(args: argparse.Namespace) -> Dict[str, Any]:
    flags = {"strategy": "strategy.name", "seed": "seed", "data_root": "data.root",
             "output": "output.dir", "device": "device", "class_list": "data.class_list"}
    values = {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag, None) is not None}
    if getattr(args, "no_download", False):
        values["data.download"] = False
    if getattr(args, "verbose", False):
        values["evaluation.verbose"] = True
    if getattr(args, "model", None) is not None:  # the model keys as select_model sets them
        chosen = select_model({"model": {}}, args.model)["model"]
        values.update({f"model.{key}": value for key, value in chosen.items()})
    return values


def config_from_args(args: argparse.Namespace) -> Dict[str, Any]:
    """The validated config: YAML file, then the dedicated flags, then ``--set`` overrides.

    With ``--resume`` / ``--eval-only`` (single run) and no ``--config``, the run folder's ``config.yaml`` is the
    starting point instead of the default config file, so the run continues as it was started; flags that
    change it are refused later by the runner (only harmless keys such as the device may differ).
    """
    config_file = args.config if args.config is not None else getattr(args, "default_config", None)
    values = _flag_values(args)
    if (args.resume or args.eval_only) and not args.compare and args.config is None:
        # Locate the run folder (--output, or the default config's output.dir filled in by the flags), then
        # start from its config.yaml; --set values that only make sense for that config must not stop this.
        output = values.get("output.dir")
        if isinstance(output, str) and "{" not in output:  # the folder itself: no config to build for it
            saved = read_run_yaml(Path(output).expanduser())
            if saved is not None:
                return load_config(None, args.overrides, values, base=saved)
        for overrides in (args.overrides, []):
            try:
                folder = output_dir(load_config(config_file, overrides, values))
            except ConfigError:
                continue
            saved = read_run_yaml(folder)
            if saved is not None:
                return load_config(None, args.overrides, values, base=saved)
            break
    return load_config(config_file, args.overrides, values)


def main(argv: Optional[Sequence[str]], *, description: str, default_config: Path, imagenet: bool = False,
         prog: Optional[str] = None) -> int:
    """Runs the command line; returns the exit status (errors are one line on stderr, no traceback)."""
    args = build_parser(description, default_config, imagenet, prog).parse_args(argv)
    try:
        if args.overwrite and (args.resume or args.eval_only):
            raise ConfigError("--overwrite starts a run afresh; it cannot be combined with --resume or --eval-only")
        config = config_from_args(args)
        if args.print_config:
            print(dump_config(config), end="")
        elif args.eval_only:
            results = evaluate_saved_run(output_dir(config), config=config)
            print(f"re-evaluated {results['run']}: wrote eval_results.json")
        elif args.compare:
            seeds = args.seeds or [config["seed"]]
            outcome = compare(config, models=args.models, strategies=args.strategies, seeds=seeds,
                              joint=not args.no_joint, resume=args.resume, overwrite=args.overwrite)
            print(outcome["table"])
            print(f"wrote {outcome['folder']}/comparison.md and figures")
        else:
            results = run(config, resume=args.resume, overwrite=args.overwrite)
            summary = results["summary"]
            print(f"avg incremental accuracy {summary['avg_incremental_accuracy']:.4f}, "
                  f"last accuracy {summary['last_accuracy']:.4f}; results in {output_dir(config)}")
    except (ConfigError, DatasetNotFoundError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (DivergenceError, WriteError) as error:  # a failed run, not bad input
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Preempted as stopped:
        print(stopped, file=sys.stderr)
        return PREEMPTED_EXIT
    except KeyboardInterrupt:
        print("interrupted: finished experiences are checkpointed; continue with --resume", file=sys.stderr)
        return 130
    shutdown_distributed()  # after success only: torchrun stops every rank when one fails
    return 0


CONSOLE_DESCRIPTION = """Class-incremental learning with Locality-Preserved Attention ViTs in Avalanche.

  avalanche-lpa                                          the authors' recipe, Split CIFAR-100 B0 10 steps (GPU-sized)
  avalanche-lpa --config cifar100_quick --output runs/my-run      a CPU-sized run
  avalanche-lpa --config fashion_mnist --model gpsa --seed 1994
  avalanche-lpa --config imagenet100_10steps --data-root /data/imagenet
  avalanche-lpa --compare --seeds 1993 1994 1995         LPA vs GPSA vs ViT + joint controls
  avalanche-lpa --output runs/my-run --resume            continue an interrupted run, as it was started
  avalanche-lpa --config cifar100_quick --print-config   the resolved config as YAML
  avalanche-lpa configs                                  the shipped configs, one line each

Datasets are read from Avalanche's location (~/.avalanche/data/<name>) or --data-root, and CIFAR-100 /
Fashion-MNIST are downloaded there on first use unless --no-download.
"""

#: The config ``avalanche-lpa`` runs without ``--config``: the paper's main study.
DEFAULT_CONFIG = "cifar100_b0_10steps"


def list_configs() -> str:
    """One line per shipped config: its name and the first sentence of its leading comment."""
    described = descriptions()
    width = max(map(len, described))
    return "\n".join(f"{name:<{width}}  {text}" for name, text in described.items())


def console(argv: Optional[Sequence[str]] = None) -> int:
    """``avalanche-lpa``: ``configs`` lists the shipped configs; anything else runs (see ``--help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["configs"]:
        if len(argv) > 1:
            print(f"error: 'configs' takes no arguments, got {' '.join(argv[1:])}", file=sys.stderr)
            return 2
        print(list_configs())
        return 0
    return main(argv, description=CONSOLE_DESCRIPTION, default_config=config_path(DEFAULT_CONFIG), imagenet=True,
                prog="avalanche-lpa")
