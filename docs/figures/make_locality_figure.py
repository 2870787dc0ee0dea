"""Draws the README's locality figure: a toy run of LPA, GPSA and plain-attention ViTs (CPU, about a minute).

A small LocalityViT (16x16 single-channel images, 8x8 patch grid, 3 blocks) learns the synthetic
class-incremental benchmark (5 experiences x 2 classes) with Naive fine-tuning; the locality metric of
``cil_evaluator`` is recorded after every experience. It illustrates the figure, not the paper's numbers.

    python docs/figures/make_locality_figure.py [out_dir]
"""
import sys
import time
from pathlib import Path

import torch
from avalanche.training import Naive

from avalanche_lpa.data import synthetic_benchmark
from avalanche_lpa.metrics import uniform_attention_distance
from avalanche_lpa.report import collect_results, plot_locality
from avalanche_lpa.metrics import cil_evaluator, experience_sizes
from avalanche_lpa.models import LocalityViT

RUNS = {"LPA": "lpa", "GPSA (ConViT)": "gpsa", "ViT (MHSA)": "mhsa"}
MODEL = dict(img_size=16, patch_size=2, in_chans=1, embed_dim=48, depth=3, num_heads=4, drop_path_rate=0.0)


def run(attn_type: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    benchmark = synthetic_benchmark(
        n_experiences=5, classes_per_experience=2, img_size=16, train_per_class=64, seed=seed
    )
    model = LocalityViT(attn_type=attn_type, **MODEL)
    strategy = Naive(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3),
                     criterion=torch.nn.CrossEntropyLoss(), train_mb_size=32, train_epochs=4, eval_mb_size=128,
                     evaluator=cil_evaluator(loggers=[], probe_size=128))
    start = time.time()
    for experience in benchmark.train_stream:
        strategy.train(experience)
        strategy.eval(benchmark.test_stream)
    return collect_results(strategy, config={"attn_type": attn_type, **MODEL}, seed=seed, device="cpu",
                           wall_time_s=time.time() - start, exp_sizes=experience_sizes(benchmark.test_stream))


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
    results = {name: run(attn_type) for name, attn_type in RUNS.items()}
    for name, r in results.items():
        print(f"{name}: locality per experience {[round(v, 3) for v in r['locality']['mean']]}, "
              f"last accuracy {r['summary']['last_accuracy']:.3f}")
    grid = MODEL["img_size"] // MODEL["patch_size"]
    plot_locality({name: r["locality"]["layers"] for name, r in results.items()}, out / "locality_toy.png",
                  title="Mean attention distance per layer (toy synthetic benchmark)",
                  reference=uniform_attention_distance(grid))
