"""The experiment script under torchrun: 2 CPU processes (gloo) write one run folder with identical metrics."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .processes import free_port

# Multi-process runs under torchrun take tens of seconds: `pytest -m "not slow"` skips them in the inner loop.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]



# Per strategy: the options a 2-experience synthetic run needs besides the common ones. DyTox (a model family
# of its own: task tokens, per-token heads, a divergence head) also finetunes through DDP with a frozen encoder.
RUNS = {
    "replay": ["--set", "strategy.train_mb_size=16", "--set", "strategy.mem_size=20"],
    # The authors' recipe on per-experience heads: concatenated replay with repeated augmentation (the sampler
    # shards itself), the authors' distillation, finetuning through DDP with the backbone frozen.
    "lpa": ["--set", "model.head=per_experience", "--set", "strategy.train_mb_size=8", "--set", "strategy.mem_size=16",
            "--set", "strategy.epochs_first=1", "--set", "strategy.finetune.epochs=1",
            "--set", "strategy.lr_schedule.schedule_epochs=null", "--set", "strategy.lr_schedule.step=iteration",
            "--set", "strategy.lr_schedule.warmup_epochs=0"],
    "dytox": ["--set", "strategy.train_mb_size=8", "--set", "strategy.mem_size=16", "--set", "strategy.epochs_first=1",
              "--set", "strategy.finetune.epochs=1", "--set", "strategy.lr_schedule.schedule_epochs=null",
              "--set", "strategy.lr_schedule.step=iteration", "--set", "strategy.lr_schedule.warmup_epochs=0"],
}
# One memory per rank, herded from the rank's shard: twice the distinct exemplars of one memory.
RUNS["lpa_rank_shard"] = RUNS["lpa"] + ["--set", "strategy.memory_scope=rank_shard"]
MODELS = {"replay": "lpa_vit_tiny", "lpa": "lpa_vit_tiny", "dytox": "dytox_lpa_tiny", "lpa_rank_shard": "lpa_vit_tiny"}
SCOPES = {"lpa_rank_shard": ("rank_shard", 2)}  # the scope and how many memories (default: global, one)


@pytest.mark.parametrize("strategy", sorted(RUNS))
def test_split_cifar100_script_runs_under_torchrun(strategy, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
        str(REPO / "experiments" / "split_cifar100.py"), "--device", "cpu", "--output", str(out),
        "--strategy", strategy.split("_rank")[0], "--set", "data.dataset=synthetic", "--set", "data.n_experiences=2",
        "--set", "data.class_order=null", "--set", "data.num_workers=0", "--set", "model.preset=tiny",
        "--set", "model.overrides={img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 18, depth: 2, num_heads: 9}",
        "--set", "strategy.train_epochs=1", "--set", "evaluation.progress_bar=false",
        "--set", "evaluation.locality_probe_size=16", *RUNS[strategy],
    ]
    # Prepended, not replaced: where avalanche-lib itself comes from PYTHONPATH (gpu_check.sh) it must stay there.
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    # Both ranks print to one pipe, so lines may interleave: find the reports anywhere in the output.
    summaries = re.findall(r"avg incremental accuracy [\d.]+, last accuracy [\d.]+", done.stdout)
    assert len(summaries) == 2 and summaries[0] == summaries[1]  # every rank reports the same metrics
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 2 and len(results["accuracy_matrix"]) == 2
    card = results["run_card"]  # the batch per process and in all, the memory and its scope
    assert card["world_size"] == 2 and card["global_batch"] == 2 * card["batch_per_process"]
    scope, memories = SCOPES.get(strategy, ("global", 1))
    assert card["memory_scope"] == scope and "batch " + str(card["batch_per_process"]) + " per process (" \
        + str(card["global_batch"]) + " in all)" in done.stdout
    # whether another number of processes would run the same experiment, and why not (one memory per rank)
    assert card["sample_order"] == "seeded"
    assert (f"processes any number at global batch {card['global_batch']}: the same batches"
            + (f", but memory_scope {scope} keeps one memory per process" if memories > 1 else " and the same memory")
            ) in done.stdout
    # distinct exemplars over both ranks after each experience: one global memory holds mem_size, one memory per
    # rank herded from disjoint shards twice that
    assert card["distinct_exemplars"] == [memories * card["memory_size"]] * 2
    assert results["model"] == MODELS[strategy]
    assert (out / "checkpoint.pkl").is_file() and (out / "model.pt").is_file()
    assert len(list(out.glob("*.tmp"))) == 0
