"""The command line: ``avalanche-lpa`` / ``python -m avalanche_lpa`` and ``experiments/split_*.py``.

Argument parsing only: ``--help``, ``--version``, ``configs`` and every argument error answer with the standard
library alone; the config is read and validated when a command needs it, and torch, timm and Avalanche are imported
when a run starts. Errors are one line on stderr, no traceback. Exit status: 0 success (a ``--resume`` of a
finished run included), 2 bad input (config, flags, device, data, output folder, a folder in use, a damaged run
file), 1 a run that failed (diverged, or a file could not be written: a full disk), 75 preempted (SIGTERM or
SIGUSR1: checkpointed, continue with --resume), 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, NoReturn, Optional, Sequence

from .config.shipped import CONFIG_DIR, config_path, descriptions
from .errors import ConfigError, user_message
from .files import WriteError
from .names import ATTENTION_TYPES, DOWNLOADED_DATASETS, STRATEGY_NAMES, TIMM_PREFIX
from .version import __version__

__all__ = ["DEFAULT_CONFIG", "build_parser", "check_flags", "config_from_args", "console", "main"]

MODEL_CHOICES = f"{{{','.join(ATTENTION_TYPES)},timm:NAME}}"


def model_choice(value: str) -> str:
    """An attention type of the LocalityViT family or ``timm:<name>`` (the name is checked with the config)."""
    if value in ATTENTION_TYPES or (value.startswith(TIMM_PREFIX) and len(value) > len(TIMM_PREFIX)):
        return value
    raise argparse.ArgumentTypeError(f"{value!r}: choose {', '.join(ATTENTION_TYPES)} or timm:<name> (a timm model)")


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


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose argument errors are one line (its own print the whole usage block first)."""

    def error(self, message: str) -> "NoReturn":
        self.exit(2, f"error: {message} ({self.prog} --help lists the flags)\n")


def build_parser(description: str, default_config: Path, imagenet: bool = False,
                 prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", default=None, metavar="NAME|FILE",
                        help=f"a shipped config by name (avalanche-lpa configs lists them) or a YAML file; default: "
                             f"{_config_label(default_config)}; with --resume / --eval-only: the run's config.yaml")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (file, flags and --set values, defaults filled in) as YAML and "
                             "exit; it is validated as a run validates it, so what it prints is what would run (whether this "
                             "machine has the device is checked when a run starts)")
    parser.add_argument("--model", type=model_choice, metavar=MODEL_CHOICES,
                        help="attention type (model.attn_type), or timm:<name> for any timm model (model.name)")
    parser.add_argument("--strategy", choices=STRATEGY_NAMES, metavar="NAME",
                        help=f"strategy (strategy.name): {', '.join(STRATEGY_NAMES)}; config options it does not take "
                             "are dropped")
    parser.add_argument("--seed", type=int, help="seed (also of the class order when none is given)")
    parser.add_argument("--data-root", help="dataset folder (data.root)")
    parser.add_argument("--output", help="run folder (output.dir); {name} {model} {strategy} {seed} are filled in")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output from its checkpoint, with the run's own config.yaml (a "
                             "finished run is left as it is)")
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
    group.add_argument("--models", nargs="+", type=model_choice, metavar=MODEL_CHOICES, default=None,
                       help=f"models to compare: attention types and timm:<name> specs (default: {' '.join(ATTENTION_TYPES)})")
    group.add_argument("--strategies", nargs="+", choices=STRATEGY_NAMES, default=None, metavar="NAME",
                       help="strategies to compare (names as --strategy)")
    group.add_argument("--seeds", nargs="+", type=int, default=None, help="default: the config's seed")
    group.add_argument("--no-joint", action="store_true", help="skip the joint-training control runs")
    if imagenet:
        parser.add_argument("--class-list", help="file with one WordNet id per line (data.class_list)")
    parser.set_defaults(default_config=default_config)
    return parser


def _flag_values(args: argparse.Namespace) -> Dict[str, Any]:
    from .config.overrides import select_model

    flags = {"strategy": "strategy.name", "seed": "seed", "data_root": "data.root",
             "output": "output.dir", "device": "device", "class_list": "data.class_list"}
    values = {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag, None) is not None}
    if getattr(args, "no_download", False):
        values["data.download"] = False
    if getattr(args, "verbose", False):
        values["evaluation.verbose"] = True
    if getattr(args, "model", None) is not None:
        values.update(select_model(args.model))
    return values


def config_from_args(args: argparse.Namespace) -> Any:
    """The validated config (:class:`~avalanche_lpa.config.RunConfig`): YAML file, then the dedicated flags, then
    ``--set`` overrides.

    With ``--resume`` / ``--eval-only`` (single run) and no ``--config``, the run folder's ``config.yaml`` is the
    starting point instead of the default config file, so the run continues as it was started; flags that
    change it are refused later by the runner (only harmless keys such as the device may differ).
    """
    from .config.files import read_run_yaml
    from .config.load import load_config

    config_file = args.config if args.config is not None else getattr(args, "default_config", None)
    values = _flag_values(args)
    if (args.resume or args.eval_only) and not args.compare and args.config is None:
        # Locate the run folder (--output, or the default config's output.dir filled in by the flags), then
        # start from its config.yaml; --set values that only make sense for that config must not stop this.
        from .runner.folder import output_dir

        output = values.get("output.dir")
        looked = output if isinstance(output, str) else "the --output folder"
        if isinstance(output, str) and "{" not in output:  # the folder itself: no config to build for it
            saved = read_run_yaml(Path(output).expanduser())
            if saved is not None:
                return load_config(None, args.overrides, values, base=saved)
        for overrides in (args.overrides, []):
            try:
                folder = output_dir(load_config(config_file, overrides, values))
            except ConfigError:
                continue
            saved, looked = read_run_yaml(folder), str(folder)
            if saved is not None:
                return load_config(None, args.overrides, values, base=saved)
            break
        if args.resume:  # else the default config would start: the GPU recipe, in a misspelt folder
            raise ConfigError(f"--resume: {looked} holds no run to continue (no config.yaml); check --output, or "
                              "pass --config to start the run there (with --resume it starts when the folder is empty)")
    return load_config(config_file, args.overrides, values)


#: Flags of --compare (ignored by a single run, so refused without it).
_COMPARE_FLAGS = {"models": "--models", "strategies": "--strategies", "seeds": "--seeds", "no_joint": "--no-joint"}


def check_flags(args: argparse.Namespace) -> None:
    """Flags that contradict each other are refused (one ``ConfigError``), never silently ignored."""
    if args.overwrite and (args.resume or args.eval_only):
        raise ConfigError("--overwrite starts a run afresh; it cannot be combined with --resume or --eval-only")
    if not args.compare:
        given = [flag for key, flag in _COMPARE_FLAGS.items() if getattr(args, key)]
        if given:
            what = "a flag" if len(given) == 1 else "flags"
            raise ConfigError(f"{', '.join(given)}: {what} of --compare; add --compare, or use --model / --strategy / "
                              "--seed for one run")
        return
    if args.model is not None:
        raise ConfigError(f"--model {args.model} picks the model of one run; with --compare list them with --models")
    if args.eval_only:
        raise ConfigError("--eval-only re-evaluates one finished run; drop --compare and point --output at its folder")


def _execute(args: argparse.Namespace, config: Any) -> int:
    """Runs, resumes, evaluates or compares: the part of :func:`main` that needs torch, timm and Avalanche."""
    from .data import DatasetNotFoundError
    from .distributed import shutdown_distributed
    from .plugins import DivergenceError
    from .runner import CheckpointError, PREEMPTED_EXIT, Preempted, Run, compare, evaluate_saved_run, output_dir
    from .runner.console import evaluation_summary

    try:
        if args.eval_only:
            print(evaluation_summary(evaluate_saved_run(output_dir(config), config=config)))
        elif args.compare:
            seeds = args.seeds or [config.seed]
            outcome = compare(config, models=args.models, strategies=args.strategies, seeds=seeds,
                              joint=not args.no_joint, resume=args.resume, overwrite=args.overwrite)
            print(outcome["table"])
            print(f"wrote {outcome['folder']}/comparison.md and figures")
        else:
            run = Run(config, resume=args.resume, overwrite=args.overwrite)
            finished = run.finished()
            if finished is not None:
                print(f"{run.folder} holds a finished run ({finished}): nothing to resume, nothing was changed; "
                      "its results are in results.json (start it again with --overwrite)")
                return 0
            summary = run.train()["summary"]
            print(f"avg incremental accuracy {summary['avg_incremental_accuracy']:.4f}, "
                  f"last accuracy {summary['last_accuracy']:.4f}; results in {run.folder}")
    except (ConfigError, DatasetNotFoundError, CheckpointError) as error:
        print(f"error: {user_message(error)}", file=sys.stderr)
        return 2
    except (DivergenceError, WriteError) as error:  # a failed run, not bad input
        print(f"error: {user_message(error)}", file=sys.stderr)
        return 1
    except Preempted as stopped:
        print(stopped, file=sys.stderr)
        return PREEMPTED_EXIT
    shutdown_distributed()  # after success only: torchrun stops every rank when one fails
    return 0


def main(argv: Optional[Sequence[str]], *, description: str, default_config: Path, imagenet: bool = False,
         prog: Optional[str] = None) -> int:
    """Runs the command line; returns the exit status (errors are one line on stderr, no traceback)."""
    args = build_parser(description, default_config, imagenet, prog).parse_args(argv)
    config = None
    try:
        check_flags(args)
        if args.compare and args.models is None:  # after the check, which tells a flag given from its default
            args.models = list(ATTENTION_TYPES)
        config = config_from_args(args)
        if args.print_config:
            from .config.files import dump_config

            if args.compare:  # every run of the comparison is checked, the base config printed
                from .runner import comparison_cells

                comparison_cells(config, models=args.models, strategies=args.strategies,
                                 seeds=args.seeds or [config.seed])
            print(dump_config(config), end="")
            return 0
        return _execute(args, config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(args, config), file=sys.stderr)
        return 130


def _interrupted(args: argparse.Namespace, config: Any) -> str:
    """What Ctrl-C left behind, in one line."""
    if config is None or args.print_config:
        return "interrupted"
    if args.eval_only:
        return "interrupted: the re-evaluation stopped; the run's files are as they were"
    if not config.output.checkpoint:
        return "interrupted: output.checkpoint is false, so there is nothing to resume; start again with --overwrite"
    return "interrupted: finished experiences are checkpointed; continue with --resume"


CONSOLE_DESCRIPTION = """Class-incremental learning with Locality-Preserved Attention ViTs in Avalanche.

  avalanche-lpa                                          the authors' recipe, Split CIFAR-100 B0 10 steps (GPU-sized)
  avalanche-lpa --config cifar100_quick --output runs/my-run      a CPU-sized run
  avalanche-lpa --config fashion_mnist --model gpsa --seed 1994
  avalanche-lpa --config imagenet100_10steps --data-root /data/imagenet
  avalanche-lpa --compare --seeds 1993 1994 1995         LPA vs GPSA vs ViT + joint controls
  avalanche-lpa --output runs/my-run --resume            continue an interrupted run, as it was started
  avalanche-lpa --config cifar100_quick --print-config   the resolved config as YAML
  avalanche-lpa configs                                  the shipped configs, one line each

Datasets are read from Avalanche's location (~/.avalanche/data/<name>) or --data-root;
{downloaded} are downloaded there on first use unless --no-download.
""".format(downloaded=", ".join(DOWNLOADED_DATASETS[:-1]) + " and " + DOWNLOADED_DATASETS[-1])

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
