"""The CUDA paths: LPA kernels, SDPA backend, every strategy, bf16, torch.compile, NCCL and GPU-to-CPU resume.

Tests marked ``cuda`` are skipped where no GPU is visible (``tests/conftest.py``); ``benchmarks/gpu_check.sh``
runs them on a GPU machine. The unmarked tests here run the same checks on the CPU, so the comparisons and
probes the CUDA tests rely on are exercised (and can be seen to fail) on every machine.
"""
from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Set

import pytest
import torch
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training.plugins import EvaluationPlugin
from torch.nn.attention import SDPBackend, sdpa_kernel

from avalanche_lpa.runner.checkpoint import load_checkpoint
from avalanche_lpa.config import load_config
from avalanche_lpa.runner import RunInterrupted, build_model, run
from avalanche_lpa.layers import LPAttention
from avalanche_lpa.models import LocalityViT
from avalanche_lpa.training import STRATEGIES, build_strategy, needs_fixed_head, strategy_options

from .processes import free_port

REPO = Path(__file__).resolve().parents[1]
ON_CUDA = pytest.param("cuda", marks=pytest.mark.cuda)
DEVICES = ["cpu", ON_CUDA]

# A tiny model whose head width (32 / 4 = 8) the memory-efficient SDPA kernel accepts in float32 and bf16: the
# 18-wide, 9-head model of the CPU tests (head width 2) would fall back to the math kernel on a GPU.
TINY = dict(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=4, drop_path_rate=0.0)
TINY_YAML = "{img_size: 8, patch_size: 2, in_chans: 1, embed_dim: 32, depth: 2, num_heads: 4, drop_path_rate: 0.0}"
# The layer at the CIFAR and ImageNet presets (width 384, 12 heads; 8x8 and 14x14 patches).
SHAPES = {"cifar": dict(grid=8, batch=8), "imagenet": dict(grid=14, batch=2)}
WIDTH, HEADS = 384, 12
# Small memories and one finetuning epoch, so every strategy runs two experiences in seconds.
SMALL = {"mem_size": 12, "patterns_per_exp": 8, "train_epochs": 1, "epochs_first": None, "finetune": {"epochs": 1}}

#: aten operators behind ``F.scaled_dot_product_attention``, by backend, as the profiler names them.
SDPA_OPS = {
    "aten::_scaled_dot_product_efficient_attention": "efficient",
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_cudnn_attention": "cudnn",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash_cpu",
    "aten::_scaled_dot_product_fused_attention_overrideable": "overrideable",
    "aten::_scaled_dot_product_attention_math": "math",
}


# -- helpers ---------------------------------------------------------------------------------------------------
def sdpa_backends(fn: Callable[[], Any]) -> Set[str]:
    """The SDPA backends that ran during ``fn()`` (from the profiler's operator names)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {SDPA_OPS[event.key] for event in prof.key_averages() if event.key in SDPA_OPS}


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """``||value - reference|| / ||reference||`` in float64."""
    value, reference = value.detach().double(), reference.detach().double()
    return ((value - reference).norm() / reference.norm()).item()


def randomised_layer(grid: int, device: str) -> LPAttention:
    """An LPA layer moved away from its init, so content, position and warm-up terms all matter."""
    layer = LPAttention(WIDTH, HEADS, grid)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
        layer.content_factor.fill_(0.7)  # a kernel that dropped the content warm-up factor would be caught
    return layer.to(device)


def output_and_grads(layer: LPAttention, x: torch.Tensor, target: torch.Tensor, path: str,
                     precision: str) -> Dict[str, torch.Tensor]:
    """Output and gradients (input and every parameter) of one fwd+bwd through ``path``."""
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = layer.forward_explicit(x)[0] if path == "explicit" else layer.forward_fused(x)
    ((out.to(target.dtype) - target) ** 2).sum().backward()
    result = {"output": out.detach(), "grad_x": x.grad}
    result.update({"grad_" + name: p.grad for name, p in layer.named_parameters()})
    return result


class LossRecorder(SupervisedPlugin):
    """Keeps the loss of every training iteration."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: List[float] = []

    def after_backward(self, strategy: Any, **kwargs: Any) -> None:
        self.losses.append(float(strategy.loss.detach()))


def train_losses(model: torch.nn.Module, benchmark: Any, device: str, **options: Any) -> List[float]:
    """Losses of 2 epochs of ``naive`` on the first experience (same batches for every call)."""
    recorder = LossRecorder()
    strategy = build_strategy("naive", model, device=device, evaluator=EvaluationPlugin(loggers=[]),
                              train_mb_size=16, train_epochs=2, plugins=[recorder], **options)
    torch.manual_seed(1)  # the training loader's shuffling
    strategy.train(benchmark.train_stream[0])
    return recorder.losses


def assert_losses_close(losses: List[float], reference: List[float], first: float, mean: float) -> None:
    assert len(losses) == len(reference) == 8 and all(math.isfinite(v) for v in losses)
    gaps = [abs(a - b) / abs(b) for a, b in zip(losses, reference)]
    assert gaps[0] <= first and sum(gaps) / len(gaps) <= mean, (gaps, losses, reference)



# -- LPA kernels ---------------------------------------------------------------------------------------------
def test_sdpa_backend_probe_names_the_kernel_that_ran():
    layer = randomised_layer(SHAPES["cifar"]["grid"], "cpu")
    layer.kernel = "sdpa"
    x = torch.randn(2, SHAPES["cifar"]["grid"] ** 2, WIDTH)
    with sdpa_kernel([SDPBackend.MATH]):
        assert sdpa_backends(lambda: layer(x).sum().backward()) == {"math"}
    assert sdpa_backends(lambda: layer(x).sum().backward())  # whatever the CPU picks, the probe sees it
    layer.kernel = "matmul"
    assert sdpa_backends(lambda: layer(x).sum().backward()) == set()


@pytest.mark.parametrize("layer_type", ["mhsa", "lpa"])
@pytest.mark.parametrize("device", DEVICES)
def test_plain_and_fused_lpa_attention_take_the_fast_backend_in_half_precision(device, layer_type):
    """Without a mask LPA is plain attention over longer heads: on CUDA in bf16 it takes FlashAttention as plain
    attention does (a float mask ruled it out); on the CPU, the flash CPU kernel, never the math fallback."""
    from avalanche_lpa.layers import ATTENTION_LAYERS

    grid = SHAPES["imagenet"]["grid"]
    kwargs = {"kernel": "fused"} if layer_type == "lpa" else {}
    layer = ATTENTION_LAYERS[layer_type](WIDTH, HEADS, grid, **kwargs).to(device)
    x = torch.randn(2, grid * grid, WIDTH, device=device)

    def step():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            out = layer(x)
        out.float().sum().backward()

    assert sdpa_backends(step) == ({"flash"} if device == "cuda" else {"flash_cpu"})


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kernel", ["fused", "matmul", "sdpa"])
@pytest.mark.parametrize("device", DEVICES)
def test_fused_kernels_equal_the_explicit_path(device, kernel, precision, shape):
    """Outputs and gradients against a float64 reference; on CUDA ``sdpa`` must run on the efficient kernel."""
    grid, batch = SHAPES[shape]["grid"], SHAPES[shape]["batch"]
    layer = randomised_layer(grid, device)
    layer.kernel = kernel
    x = torch.randn(batch, grid * grid, WIDTH, device=device)
    target = torch.randn(batch, grid * grid, WIDTH, device=device)
    reference = output_and_grads(copy.deepcopy(layer).double(), x.double(), target.double(), "explicit", "fp32")
    explicit = output_and_grads(layer, x, target, "explicit", precision)
    if device == "cuda" and kernel == "sdpa":
        # Only the memory-efficient kernel allowed: the call fails if SDPA cannot take the bias there.
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            fused = output_and_grads(layer, x, target, "fused", precision)
    else:
        fused = output_and_grads(layer, x, target, "fused", precision)
    assert fused.keys() == reference.keys() and len(fused) == 8
    for name, ref in reference.items():
        fused_error, explicit_error = relative_error(fused[name], ref), relative_error(explicit[name], ref)
        if precision == "fp32":
            # float32 lands near 1e-6 (TF32 matrix units would give ~1e-3 on some gradients); a wrong term in the
            # logits, e.g. a dropped warm-up factor, gives errors of order 0.1 to 1.
            limit = 5e-3
        else:
            # bf16 rounding alone reaches ~1e-1 for some gradients: the fused path may not be much worse than
            # the explicit path in the same precision.
            limit = 2 * explicit_error + 1e-2
            assert explicit_error < 0.25, (name, explicit_error)
        assert fused_error <= limit, (name, fused_error, explicit_error)


@pytest.mark.parametrize("device", DEVICES)
def test_auto_kernel_is_the_device_rule(device, monkeypatch):
    rule = LPAttention.kernel_for(torch.device(device))
    assert rule == "fused"  # the rule documented in kernel_for: the mask-free kernel on every device
    grid = SHAPES["cifar"]["grid"]
    auto = randomised_layer(grid, device)
    assert auto.kernel == "auto"
    chosen = copy.deepcopy(auto)
    chosen.kernel = rule
    calls: List[bool] = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(kwargs.get("attn_mask") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    x = torch.randn(2, grid * grid, WIDTH, device=device)
    out = auto(x)
    # the "fused" kernel: one SDPA call and no mask ("sdpa": one call with a mask; "matmul": none)
    assert calls == {"fused": [False], "sdpa": [True], "matmul": []}[rule]
    torch.testing.assert_close(out, chosen(x), rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_whole_model_runs_no_math_sdpa_kernel_on_cuda(precision):
    """Default dispatch, fwd+bwd of LPAViT at the CIFAR and ImageNet presets: a fused SDPA kernel, never math."""
    for img_size, patch_size, batch in ((32, 4, 8), (224, 16, 2)):
        model = LocalityViT(img_size=img_size, patch_size=patch_size, embed_dim=WIDTH, num_heads=HEADS, depth=2,
                            num_classes=10).cuda()
        x = torch.randn(batch, 3, img_size, img_size, device="cuda")

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(x).float().square().mean()
            loss.backward()
            torch.cuda.synchronize()

        step()  # warm-up: lazy initialisation stays out of the profile
        backends = sdpa_backends(step)
        assert backends and "math" not in backends, (img_size, backends)


# -- training on CUDA ----------------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_trains_on_cuda(name, cil_benchmark, monkeypatch):
    model = LocalityViT(**TINY, num_classes=6 if needs_fixed_head(name) else None)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    biased_sdpa_calls: List[str] = []
    original = torch.nn.functional.scaled_dot_product_attention

    def spy(query: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if kwargs.get("attn_mask") is not None:
            biased_sdpa_calls.append(query.device.type)
        return original(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    recorder = LossRecorder()
    valid = strategy_options(name)
    strategy = build_strategy(
        name, model, device="cuda", train_mb_size=16, plugins=[recorder],
        evaluator=EvaluationPlugin(accuracy_metrics(stream=True), loggers=[]),
        **{k: v for k, v in SMALL.items() if k in valid},
    )
    for experience in cil_benchmark.train_stream[:2]:
        strategy.train(experience)
    results = strategy.eval(cil_benchmark.test_stream[:2])

    assert strategy.clock.train_exp_counter == 2
    assert recorder.losses and all(math.isfinite(v) for v in recorder.losses), recorder.losses
    assert {p.device.type for p in strategy.model.parameters()} == {"cuda"}
    assert any(not torch.equal(initial[k], v.cpu()) for k, v in model.state_dict().items() if k in initial)
    assert biased_sdpa_calls and set(biased_sdpa_calls) == {"cuda"}  # LPA took its CUDA kernel ("auto" -> sdpa)
    accuracy = [v for k, v in results.items() if k.startswith("Top1_Acc_Stream")]
    assert len(accuracy) == 1 and 0.0 <= accuracy[0] <= 1.0


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_trains_close_to_fp32(device, cil_benchmark):
    base = LocalityViT(**TINY, num_classes=6)
    bf16_model = copy.deepcopy(base)
    dtypes: List[torch.dtype] = []
    bf16_model.backbone.blocks[0].mlp.fc1.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    fp32 = train_losses(copy.deepcopy(base), cil_benchmark, device)
    bf16 = train_losses(bf16_model, cil_benchmark, device, precision="bf16")
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the forward passes really ran in bf16
    # Measured on the CPU: gaps of ~1e-3 (3 seeds, max 3e-3).
    assert_losses_close(bf16, fp32, first=1e-2, mean=2e-2)


@pytest.mark.cuda
def test_compiled_backbone_trains_close_to_eager(cil_benchmark):
    from torch._dynamo.utils import counters

    settings = ["model.preset=tiny", f"model.overrides={TINY_YAML}", "strategy.name=naive"]
    torch.manual_seed(0)
    eager = build_model(load_config(None, settings), num_classes=6)
    torch.manual_seed(0)
    compiled = build_model(load_config(None, settings + ["model.compile=true"]), num_classes=6)
    assert eager.state_dict().keys() == compiled.state_dict().keys()
    torch._dynamo.reset()
    counters.clear()
    eager_losses = train_losses(eager, cil_benchmark, "cuda")
    assert counters["frames"]["ok"] == 0
    compiled_losses = train_losses(compiled, cil_benchmark, "cuda")
    assert counters["frames"]["ok"] > 0  # the backbone's forward went through torch.compile
    assert_losses_close(compiled_losses, eager_losses, first=1e-3, mean=1e-2)


# -- runner: NCCL under torchrun, GPU checkpoint resumed on the CPU -----------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend,device", [("gloo", "cpu"), pytest.param("nccl", "cuda", marks=pytest.mark.cuda)])
def test_one_process_torchrun_run_writes_results(backend, device, tmp_path):
    out, status_file = tmp_path / "run", tmp_path / "status.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=1",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        str(REPO / "tests" / "single_rank_worker.py"), "--backend", backend, "--device", device,
        "--status", str(status_file), "--",
        "--device", device, "--output", str(out), "--strategy", "replay",
        "--set", "data.dataset=synthetic", "--set", "data.n_experiences=2", "--set", "data.class_order=null",
        "--set", "data.num_workers=0", "--set", "model.preset=tiny", "--set", f"model.overrides={TINY_YAML}",
        "--set", "strategy.train_epochs=1", "--set", "strategy.train_mb_size=16", "--set", "strategy.mem_size=20",
        "--set", "evaluation.progress_bar=false", "--set", "evaluation.locality_probe_size=16",
        "--set", "output.plots=false",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    # Own session, killed whole (launcher and worker, nothing else) on a timeout and also when pytest itself is
    # interrupted (gpu_check.sh stops a step with SIGINT): a stray NCCL worker would hold the GPU.
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        log = proc.communicate(timeout=300)[0].decode(errors="replace")
    except subprocess.TimeoutExpired:
        _stop_torchrun(proc)
        pytest.fail(f"torchrun did not finish in 300 s:\n{proc.communicate()[0].decode(errors='replace')[-4000:]}")
    finally:
        if proc.poll() is None:  # pytest itself was interrupted
            _stop_torchrun(proc)
    assert proc.returncode == 0, log[-6000:]
    status = json.loads(status_file.read_text())
    assert status["backend"] == status["info_backend"] == backend and status["world_size"] == 1
    assert status["exit_code"] == 0 and status["group_left"]
    expected_device = "cuda:0" if device == "cuda" else "cpu"
    assert status["ddp_iterations"] > 0 and status["wrappers_built"] >= 2 and status["ddp_devices"] == [expected_device]
    results = json.loads((out / "results.json").read_text())
    assert results["world_size"] == 1 and results["device"] == expected_device
    assert len(results["accuracy_matrix"]) == 2
    assert (out / "checkpoint.pkl").is_file() and (out / "model.pt").is_file()


def _stop_torchrun(proc: subprocess.Popen) -> None:
    """Stops a torchrun launcher and its workers (which run in sessions of their own)."""
    os.killpg(proc.pid, signal.SIGTERM)  # torchrun passes SIGTERM on to its workers
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _recipe_config(tmp_path: Path, device: str) -> Dict[str, Any]:
    return load_config(None, [
        "data.dataset=synthetic", "data.n_experiences=3", "model.preset=tiny", f"model.overrides={TINY_YAML}",
        "strategy.name=lpa", "strategy.mem_size=24", "strategy.train_epochs=1", "strategy.epochs_first=1",
        "strategy.finetune.epochs=1", "strategy.lr_schedule.warmup_epochs=1.0", "strategy.lpa_warmup.epochs=1.0",
        "strategy.train_mb_size=16", "evaluation.progress_bar=false", "evaluation.locality_probe_size=24",
        "output.plots=false", f"output.dir={tmp_path / 'run'}", f"device={device}", "seed=7",
    ])  # fmt: skip


def _tensor_devices(obj: Any) -> Set[str]:
    if torch.is_tensor(obj):
        return {obj.device.type}
    if isinstance(obj, dict):
        return set().union(*(_tensor_devices(v) for v in obj.values())) if obj else set()
    if isinstance(obj, (list, tuple)):
        return set().union(*(_tensor_devices(v) for v in obj)) if obj else set()
    return set()


@pytest.mark.cuda
def test_checkpoint_written_on_gpu_resumes_on_cpu(tmp_path):
    with pytest.raises(RunInterrupted):
        run(_recipe_config(tmp_path, "cuda"), stop_after=1)
    checkpoint = tmp_path / "run" / "checkpoint.pkl"
    as_saved = load_checkpoint(SimpleNamespace(), checkpoint)[0]
    assert {p.device.type for p in as_saved.model.parameters()} == {"cuda"}  # the file really holds GPU tensors
    mapped = load_checkpoint(SimpleNamespace(), checkpoint, map_location="cpu")[0]
    assert {p.device.type for p in mapped.model.parameters()} == {"cpu"}
    assert _tensor_devices(mapped.optimizer.state_dict()["state"]) == {"cpu"}
    assert torch.device(mapped.device).type == "cpu"

    resumed = run(_recipe_config(tmp_path, "cpu"), resume=True)
    assert resumed["device"] == "cpu"
    assert len(resumed["accuracy_matrix"]) == 3 and len(resumed["train_iterations"]) == 3
    assert all(0.0 <= a <= 1.0 for row in resumed["accuracy_matrix"] for a in row if a is not None)
    state = torch.load(tmp_path / "run" / "model.pt", map_location="cpu", weights_only=True)
    model = build_model(_recipe_config(tmp_path, "cpu"), num_classes=6)
    model.load_state_dict(state)  # the final model loads into a fresh CPU model
