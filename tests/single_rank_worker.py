"""The experiment runner as one ``torchrun`` process with a real process group (``tests/test_cuda.py``).

    torchrun --nproc_per_node=1 tests/single_rank_worker.py --backend nccl --status S.json -- <runner flags>

A machine with one GPU can host only one NCCL rank, and with ``WORLD_SIZE=1`` the runner would create no process
group at all. So this worker creates the group itself (``init_distributed(single_process_group=True)``) and
switches :class:`DistributedPlugin` on for one process, then calls the same command line as
``experiments/split_cifar100.py``. Every collective of the run (the DDP wrapper's broadcast and gradient
all-reduce, the barriers and object broadcasts of ``on_main``, the state broadcast after each experience) then
goes through the backend. ``--status`` receives what the process saw: the backend, the DDP wrappers built and
the devices they wrapped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.distributed as dist
from avalanche.distributed import DistributedHelper

from avalanche_lpa.distributed import init_distributed
from avalanche_lpa.plugins import DistributedModel, DistributedPlugin
from avalanche_lpa.cli import main as cli_main

from avalanche_lpa.config.shipped import CONFIG_DIR as CONFIGS  # the shipped configs (package data)


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--status", type=Path, required=True)
    parser.add_argument("runner_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    runner_args = args.runner_args[1:] if args.runner_args[:1] == ["--"] else args.runner_args

    info = init_distributed(backend=args.backend, device=args.device, single_process_group=True)
    status: Dict[str, Any] = {"backend": dist.get_backend() if dist.is_initialized() else None,
                              "info_backend": info.backend, "world_size": info.world_size,
                              "ddp_iterations": 0, "ddp_devices": [], "wrappers_built": 0}
    # One process is "not distributed" for the plugin; the group exists, so let it do its multi-process work.
    DistributedPlugin.active = staticmethod(lambda: DistributedHelper.is_distributed)
    original_wrap = DistributedPlugin._wrap

    def recording_wrap(self: DistributedPlugin, strategy: Any) -> None:
        original_wrap(self, strategy)
        assert isinstance(strategy.model, DistributedModel)
        device = str(next(strategy.model.module.parameters()).device)
        status["ddp_devices"] = sorted(set(status["ddp_devices"]) | {device})
        status["ddp_iterations"] += 1
        status["wrappers_built"] = self.wraps

    DistributedPlugin._wrap = recording_wrap  # type: ignore[method-assign]
    code = cli_main(runner_args, description="single-rank worker", default_config=CONFIGS / "cifar100_b0_10steps.yaml")
    status["exit_code"] = code
    status["group_left"] = not dist.is_initialized()  # the runner's shutdown_distributed destroyed the group
    args.status.write_text(json.dumps(status))
    return code


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1:]))
