"""Forward+backward time and peak memory of LPA against its baselines, measured side by side.

Candidates (one attention layer, one block, or the whole model):
  lpa_fused               our LPA as one mask-free SDPA call (queries and keys extended by position features)
  lpa_matmul / lpa_sdpa   our LPA with the [heads, N, N] position bias (one batched matmul + bias + softmax | SDPA
                          with the bias as its mask)
  lpa_explicit            our LPA path that materialises the probabilities (used by the locality metric)
  gpsa, mhsa              our GPSA and plain attention (same skeleton)
  mhsa_plus4              plain attention with every head 4 columns wider (zeros): the cost floor of any LPA computed
                          as one SDPA call (LPA's position features widen the heads by 4), to tell the kernel's price
                          for the wider heads from lpa_fused's own overhead
  timm_vit                timm's VisionTransformer attention (fused SDPA)
  timm_gpsa               timm's ConViT GPSA
  authors                 LPA written in the authors' style: a per-pair feature tensor [B, heads, N, N, 4]
                          (content score + 3 position features) mapped to logits; a baseline kept here only

Timing: every round runs each candidate once (order rotated each round, after warm-up), so slow drifts of
the machine hit all candidates alike; the report gives the median time per candidate and the median over
rounds of its time divided by the reference's time in the same round. On CUDA a step is timed with CUDA
events around it. Memory: peak extra memory of one fwd+bwd after a warm-up step. CPU: each candidate in a
fresh subprocess (growth of the resident-set high-water mark, reset before the step since ru_maxrss only
rises). CUDA: in this process, ``max_memory_allocated`` counts live tensors only, so the other candidates'
weights and the allocator's cache do not enter the difference.

    python benchmarks/attention_speed.py                      # everything at the three shapes, CPU
    python benchmarks/attention_speed.py --level model --shape cifar --batch 32 --rounds 15
    python benchmarks/attention_speed.py --device cuda --level model --shape cifar --batch 128 --autocast bf16
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avalanche_lpa.layers import ATTENTION_LAYERS, LocalityBlock, LPAttention, MHSAttention  # noqa: E402
from avalanche_lpa.models import PRESETS, LocalityViT  # noqa: E402

# The presets' image and patch sizes (from the dataset table: CIFAR-100 32 px / patch 4, 64 tokens; ImageNet-100
# 224 / 16, 196 tokens), and 384 px images at patch 16 (576 tokens), where the N x N terms dominate.
SHAPES = {name: {key: PRESETS[name][key] for key in ("img_size", "patch_size")} for name in ("cifar", "imagenet")}
SHAPES["large"] = {"img_size": 384, "patch_size": 16}
#: Default batch per shape: (layer and block, model).
BATCHES = {"cifar": (64, 32), "imagenet": (16, 8), "large": (4, 2)}
WIDTH, HEADS, DEPTH = 384, 12, 5


class AuthorsStyleLPA(LPAttention):
    """LPA computed the way the authors' code does: a [B, heads, N, N, 4] feature tensor per forward."""

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x)
        batch, heads, tokens, _ = q.shape
        content = (q @ k.transpose(-2, -1)) * self.scale
        rel = self.rel_pos.expand(batch, heads, tokens, tokens, 3)
        features = torch.cat([content.unsqueeze(-1), rel], dim=-1)  # [B, H, N, N, 4]
        weights = torch.cat([self.content_weight.view(-1, 1), self.pos_weight], dim=1)  # [H, 4]
        logits = (features * weights.view(1, heads, 1, 1, 4)).sum(-1)
        return self._attend(logits.softmax(dim=-1), v)


class WiderHeadsAttention(MHSAttention):
    """Plain attention over heads ``extra`` zero columns wider: what one SDPA call costs at LPA's head size."""

    extra = 4

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (F.pad(t, (0, self.extra)) for t in self._qkv(x))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)[..., : self.head_dim]
        return self._merge_heads(out)


def _timm_vit_attention():
    try:
        from timm.layers import Attention
    except ImportError:  # timm < 1.0 keeps it in the ViT module
        from timm.models.vision_transformer import Attention

    return Attention(WIDTH, num_heads=HEADS)


def _timm_gpsa():
    from timm.models.convit import GPSA

    return GPSA(WIDTH, num_heads=HEADS)


def _timm_block(kind: str):
    from timm.models.convit import Block as ConvitBlock
    from timm.models.vision_transformer import Block

    if kind == "timm_vit":
        return Block(WIDTH, HEADS)
    return ConvitBlock(WIDTH, HEADS, use_gpsa=True)


def _lpa_layer(kernel: str, grid: int) -> nn.Module:
    return LPAttention(WIDTH, HEADS, grid, kernel=kernel)


class _Explicit(nn.Module):
    """Runs a layer's explicit path (probabilities materialised) as its forward."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer.forward_explicit(x)[0]


def _layer(name: str, grid: int) -> nn.Module:
    from avalanche_lpa.layers import GPSAttention

    builders: Dict[str, Callable[[], nn.Module]] = {
        "lpa_fused": lambda: _lpa_layer("fused", grid),
        "lpa_matmul": lambda: _lpa_layer("matmul", grid),
        "lpa_sdpa": lambda: _lpa_layer("sdpa", grid),
        "lpa_explicit": lambda: _Explicit(LPAttention(WIDTH, HEADS, grid)),
        "gpsa": lambda: GPSAttention(WIDTH, HEADS, grid),
        "mhsa": lambda: MHSAttention(WIDTH, HEADS, grid),
        "mhsa_plus4": lambda: WiderHeadsAttention(WIDTH, HEADS, grid),
        "timm_vit": _timm_vit_attention,
        "timm_gpsa": _timm_gpsa,
        "authors": lambda: AuthorsStyleLPA(WIDTH, HEADS, grid),
    }
    return builders[name]()


def _block(name: str, grid: int) -> nn.Module:
    if name in ("timm_vit", "timm_gpsa"):
        return _timm_block(name)
    attn_type = {"gpsa": "gpsa", "mhsa": "mhsa", "mhsa_plus4": "mhsa"}.get(name, "lpa")
    block = LocalityBlock(WIDTH, HEADS, grid, attn_layer=ATTENTION_LAYERS[attn_type])
    if name.startswith("lpa") or name in ("authors", "mhsa_plus4"):
        block.attn = _layer(name, grid)
    return block


def _model(name: str, shape: str) -> nn.Module:
    attn_type = {"gpsa": "gpsa", "mhsa": "mhsa"}.get(name, "lpa")
    kernel = {"lpa_sdpa": "sdpa", "lpa_matmul": "matmul", "lpa_fused": "fused"}.get(name, "auto") \
        if attn_type == "lpa" else None
    model = LocalityViT(
        attn_type=attn_type, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, num_classes=100,
        drop_path_rate=0.0, lpa_kernel=kernel, **SHAPES[shape],
    )
    if name in ("authors", "lpa_explicit"):
        grid = model.backbone.grid_size
        for block in model.backbone.blocks:
            block.attn = AuthorsStyleLPA(WIDTH, HEADS, grid) if name == "authors" else _Explicit(block.attn)
    return model


LEVEL_CANDIDATES = {
    "layer": ["mhsa", "mhsa_plus4", "lpa_fused", "lpa_matmul", "lpa_sdpa", "lpa_explicit", "gpsa", "timm_vit",
              "timm_gpsa", "authors"],
    "block": ["mhsa", "mhsa_plus4", "lpa_fused", "lpa_matmul", "lpa_sdpa", "lpa_explicit", "gpsa", "timm_vit",
              "timm_gpsa", "authors"],
    "model": ["mhsa", "lpa_fused", "lpa_matmul", "lpa_sdpa", "gpsa", "authors"],
}


def build(level: str, name: str, shape: str, batch: int, device: torch.device) -> Tuple[nn.Module, torch.Tensor]:
    """A candidate module (train mode) and its input."""
    grid = SHAPES[shape]["img_size"] // SHAPES[shape]["patch_size"]
    if level == "model":
        module = _model(name, shape)
        x = torch.randn(batch, 3, SHAPES[shape]["img_size"], SHAPES[shape]["img_size"])
    else:
        module = _layer(name, grid) if level == "layer" else _block(name, grid)
        x = torch.randn(batch, grid * grid, WIDTH)
    return module.to(device).train(), x.to(device)


#: ``--autocast`` value -> dtype of the forward pass (``None``: float32, no autocast).
AUTOCAST = {"none": None, "bf16": torch.bfloat16}


def step(module: nn.Module, x: torch.Tensor, autocast: str = "none") -> None:
    """One forward + backward (forward under ``torch.autocast`` unless ``autocast == "none"``)."""
    module.zero_grad(set_to_none=True)
    dtype = AUTOCAST[autocast]
    with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = module(x).float().square().mean()
    loss.backward()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_step(module: nn.Module, x: torch.Tensor, device: torch.device, autocast: str = "none") -> float:
    """Seconds of one fwd+bwd: CUDA events on a GPU (device time, launches included), a host clock on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)  # nothing earlier may still be queued before the start event
        start.record()
        step(module, x, autocast)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    started = time.perf_counter()
    step(module, x, autocast)
    return time.perf_counter() - started


def time_candidates(level, names, shape, batch, rounds, warmup, device, autocast="none") -> Dict[str, List[float]]:
    """Seconds per fwd+bwd of every candidate, ``rounds`` samples each, interleaved."""
    built = {name: build(level, name, shape, batch, device) for name in names}
    for name, (module, x) in built.items():
        for _ in range(warmup):
            step(module, x, autocast)
    _sync(device)
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            module, x = built[name]
            times[name].append(timed_step(module, x, device, autocast))
    return times


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss() -> None:
    # ru_maxrss only ever rises (imports and model construction set it); Linux resets the VmHWM high-water
    # mark when "5" is written to clear_refs, so the peak below belongs to the measured step alone.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _return_freed_memory_to_the_os() -> None:
    # glibc keeps freed blocks below its (dynamically growing) mmap threshold inside the process, so RSS would
    # not drop after the warm-up step and the measured growth would depend on allocation history. A fixed
    # 128 KiB threshold puts every tensor of interest in its own mapping, released on free.
    import ctypes

    M_MMAP_THRESHOLD = -3
    ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 128 * 1024)


def cuda_peak_bytes(module: nn.Module, x: torch.Tensor, device: torch.device, autocast: str = "none") -> int:
    """Peak extra CUDA memory (bytes) of one fwd+bwd after a warm-up step (gradients already allocated)."""
    step(module, x, autocast)  # first step allocates gradients; measure the steady state below
    module.zero_grad(set_to_none=False)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step(module, x, autocast)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def memory_child(level: str, name: str, shape: str, batch: int, device: torch.device, autocast: str = "none") -> int:
    """Peak extra memory (bytes) of one fwd+bwd, measured in this (fresh) process."""
    if device.type == "cuda":
        return cuda_peak_bytes(*build(level, name, shape, batch, device), device, autocast)
    _return_freed_memory_to_the_os()
    module, x = build(level, name, shape, batch, device)
    step(module, x, autocast)  # first step allocates gradients; measure the steady state below
    module.zero_grad(set_to_none=False)
    _reset_peak_rss()
    base = _status_bytes("VmRSS")
    step(module, x, autocast)
    return _status_bytes("VmHWM") - base


def measure_memory(level, names, shape, batch, device, autocast="none") -> Dict[str, int]:
    """Peak extra memory per candidate: in this process on CUDA, one fresh subprocess each on CPU."""
    out = {}
    for name in names:
        if device.type == "cuda":
            out[name] = cuda_peak_bytes(*build(level, name, shape, batch, device), device, autocast)
            torch.cuda.empty_cache()
            continue
        cmd = [sys.executable, __file__, "--memory-child", name, "--level", level, "--shape", shape,
               "--batch", str(batch), "--device", str(device), "--autocast", autocast]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[name] = int(result.stdout.strip().splitlines()[-1])
    return out


def summarise(times: Dict[str, List[float]], references: List[str]) -> Dict[str, Dict[str, float]]:
    """Median time per candidate and, per reference, the median over rounds of the paired time ratio."""
    rows = {name: {"median_ms": 1e3 * statistics.median(samples)} for name, samples in times.items()}
    for ref in references:
        for name, samples in times.items():
            rows[name]["ratio_to_" + ref] = statistics.median(t / r for t, r in zip(samples, times[ref]))
    return rows


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", choices=["layer", "block", "model", "all"], default="all")
    parser.add_argument("--shape", choices=[*SHAPES, "all"], default="all")
    parser.add_argument("--batch", type=int, default=None,
                        help="default per shape (layer/block, model): cifar 64/32, imagenet 16/8, large 4/2")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--candidates", nargs="*", default=None)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--autocast", choices=sorted(AUTOCAST), default="none", help="forward-pass precision")
    parser.add_argument("--json", default=None,
                        help="output file (default: benchmarks/results/attention_speed_<shape>_<level>.json, so runs "
                             "at other shapes or levels do not overwrite each other)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")

    levels = ["layer", "block", "model"] if args.level == "all" else [args.level]
    shapes = list(SHAPES) if args.shape == "all" else [args.shape]
    if args.memory_child:
        print(memory_child(levels[0], args.memory_child, shapes[0], args.batch, device, args.autocast))
        return {}

    report = {"device": str(device), "cpu": platform.processor() or platform.machine(),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "autocast": args.autocast, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "rounds": args.rounds, "results": []}
    for shape in shapes:
        for level in levels:
            batch = args.batch or BATCHES[shape][level == "model"]
            names = args.candidates or LEVEL_CANDIDATES[level]
            names = [n for n in names if n in LEVEL_CANDIDATES[level]]
            times = time_candidates(level, names, shape, batch, args.rounds, args.warmup, device, args.autocast)
            lpa = "lpa_" + LPAttention.kernel_for(device)  # the kernel the device rule picks
            refs = [r for r in ("mhsa", lpa) if r in names]
            rows = summarise(times, refs)
            if not args.no_memory:
                for name, peak in measure_memory(level, names, shape, batch, device, args.autocast).items():
                    rows[name]["peak_mib"] = peak / 2**20
            report["results"].append({"level": level, "shape": shape, "batch": batch, "candidates": rows})
            print(f"\n{level} @ {shape} (batch {batch}, {args.rounds} rounds, {device}, autocast {args.autocast}; "
                  "ratios = median of paired ratios)")
            print(f"  {'candidate':<14}{'median ms':>11}" + "".join(f"{'/ ' + r:>14}" for r in refs) + f"{'peak MiB':>10}")
            for name in names:
                row = rows[name]
                ratios = "".join(f"{row['ratio_to_' + r]:>14.3f}" for r in refs)
                print(f"  {name:<14}{row['median_ms']:>11.2f}{ratios}{row.get('peak_mib', float('nan')):>10.1f}")
    out = Path(args.json or f"benchmarks/results/attention_speed_{args.shape}_{args.level}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    return report


if __name__ == "__main__":
    main()
