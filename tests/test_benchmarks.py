"""The benchmark baselines compute what they claim (timings themselves live in benchmarks/, not in tests)."""
import importlib.util
from pathlib import Path

import torch

from avalanche_lpa.layers import LPAttention

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_authors_style_baseline_equals_our_lpa():
    bench = _load("attention_speed")
    ours = LPAttention(36, 9, 4)
    with torch.no_grad():
        ours.content_weight.normal_()  # make the content term matter
    theirs = bench.AuthorsStyleLPA(36, 9, 4)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 36)
    # The authors' style has no denormal guard: equal up to probabilities below exp(-40).
    torch.testing.assert_close(theirs(x), ours(x), atol=1e-5, rtol=1e-5)


def test_summary_pairs_ratios_per_round():
    bench = _load("attention_speed")
    rows = bench.summarise({"mhsa": [1.0, 2.0, 4.0], "lpa_matmul": [1.0, 3.0, 4.0]}, ["mhsa"])
    assert rows["lpa_matmul"]["ratio_to_mhsa"] == 1.0  # median of 1.0, 1.5, 1.0
    assert rows["mhsa"]["median_ms"] == 2000.0
