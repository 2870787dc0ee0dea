"""The benchmark baselines compute what they claim (timings themselves live in benchmarks/, not in tests)."""
import importlib.util
import json
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("level", ["layer", "block", "model"])
def test_every_attention_candidate_builds_and_trains(level, monkeypatch):
    """Every candidate of every level runs forward + backward (the script times them; this keeps them runnable)."""
    bench = _load("attention_speed")
    monkeypatch.setattr(bench, "WIDTH", 36)
    monkeypatch.setattr(bench, "HEADS", 9)
    monkeypatch.setattr(bench, "DEPTH", 1)
    for name in bench.LEVEL_CANDIDATES[level]:
        module, x = bench.build(level, name, "cifar", 2, torch.device("cpu"))
        out = module(x)
        out.float().sum().backward()
        expected = (2, 100) if level == "model" else (2, x.shape[1], 36)
        assert tuple(out.shape) == expected, name
        assert any(p.grad is not None for p in module.parameters()), name


@pytest.mark.slow
def test_e2e_throughput_runs_every_candidate(tmp_path):
    bench = _load("e2e_throughput")
    report = bench.main(["--images", "24", "--classes", "3", "--batch", "12", "--rounds", "1",
                         "--json", str(tmp_path / "e2e.json")])
    assert set(report["candidates"]) == {"bare", "naive", "naive+ev", "recipe"}
    assert all(c["images_per_s"] > 0 for c in report["candidates"].values())
    assert json.loads((tmp_path / "e2e.json").read_text())["images"] == 24


def test_summary_pairs_ratios_per_round():
    bench = _load("attention_speed")
    rows = bench.summarise({"mhsa": [1.0, 2.0, 4.0], "lpa_matmul": [1.0, 3.0, 4.0]}, ["mhsa"])
    assert rows["lpa_matmul"]["ratio_to_mhsa"] == 1.0  # median of 1.0, 1.5, 1.0
    assert rows["mhsa"]["median_ms"] == 2000.0


def _junit(tmp_path: Path, tests: int, failures: int = 0, errors: int = 0, skipped: int = 0) -> Path:
    path = tmp_path / "report.xml"
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="{tests}" '
                    f'failures="{failures}" errors="{errors}" skipped="{skipped}"></testsuite></testsuites>')
    return path


def test_gpu_check_refuses_failed_skipped_or_empty_test_reports(tmp_path):
    report = _load("gpu_check_report")
    assert report.check_junit(_junit(tmp_path, 5))["tests"] == 5
    for counts, message in (({"tests": 0}, "no test ran"), ({"tests": 5, "failures": 1}, "1 failed"),
                            ({"tests": 5, "errors": 2}, "2 errors"), ({"tests": 5, "skipped": 3}, "3 of 5 skipped")):
        with pytest.raises(report.CheckError, match=message):
            report.check_junit(_junit(tmp_path, **counts))
    assert report.check_junit(_junit(tmp_path, 5, skipped=3), allow_skips=True)["skipped"] == 3  # CPU rehearsal
    with pytest.raises(report.CheckError, match="missing"):
        report.check_junit(tmp_path / "absent.xml")


def test_gpu_check_merges_runs_and_judges_the_model_target(tmp_path):
    report = _load("gpu_check_report")

    def run(ratio: float) -> Path:
        rows = {"mhsa": {"median_ms": 10.0, "ratio_to_mhsa": 1.0, "peak_mib": 100.0},
                "mhsa_plus4": {"median_ms": 10.9, "ratio_to_mhsa": 1.09, "peak_mib": 110.0},
                "lpa_fused": {"median_ms": 10.0 * ratio, "ratio_to_mhsa": ratio, "peak_mib": 100.0 * ratio}}
        path = tmp_path / "run.json"
        path.write_text(json.dumps({"device": "cuda", "gpu": "Some GPU", "autocast": "none", "results": [
            {"level": "model", "shape": "cifar", "batch": 128, "candidates": rows},
            {"level": "layer", "shape": "imagenet", "batch": 16, "candidates": rows}]}))
        return path

    report.add_run(tmp_path / "attention_speed.json", run(1.10), "fast")
    report.add_run(tmp_path / "attention_speed.json", run(1.30), "slow")
    merged = json.loads((tmp_path / "attention_speed.json").read_text())
    assert [r["label"] for r in merged["runs"]] == ["fast", "slow"]
    text = report.summary(tmp_path)
    assert "= 1.100 (meets the target <= 1.15" in text and "= 1.300 (MISSES the target <= 1.15" in text
    assert "LPA layer time / plain @ imagenet = 1.100 (meets the target <= 1.1)" in text
    assert "LPA layer time / plain @ imagenet = 1.300 (MISSES the target <= 1.1)" in text
    assert "LPA layer peak memory / plain @ imagenet = 1.300 (meets the target <= 1.5)" in text
    assert "floor of LPA as one SDPA call (plain, heads 4 wider) / plain @ imagenet = 1.090" in text


@pytest.fixture
def restores_cifar_checksum(monkeypatch):
    """The benchmarks make torchvision trust their fake CIFAR-100 for the whole process; a test must not leak
    that to the tests after it (a download test would then find 'CIFAR-100' where there is none)."""
    import torchvision.datasets.cifar

    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", torchvision.datasets.cifar.check_integrity)


@pytest.mark.slow
def test_input_pipeline_benchmark_runs_end_to_end(tmp_path, restores_cifar_checksum):
    bench = _load("input_pipeline")
    report = bench.main(["--data", str(tmp_path / "data"), "--train-per-class", "4", "--memory", "20", "--batch", "16",
                         "--workers", "0", "--rounds", "1", "--json", str(tmp_path / "pipeline.json")])
    row = report["workers"]["0"]
    assert row["bare_images_per_s"] > 0 and row["recipe_images_per_s"] > 0 and row["ratio"] > 0
    assert json.loads((tmp_path / "pipeline.json").read_text())["train_per_class"] == 4


@pytest.mark.slow
def test_run_cost_benchmark_runs_end_to_end(tmp_path, restores_cifar_checksum):
    """Two experiences of the B0-10 config on tiny fake CIFAR-100, every phase timed and projected."""
    bench = _load("run_cost")
    report = bench.main(["--presets", "tiny", "--experiences", "2", "--epochs", "1", "--finetune-epochs", "1",
                         "--train-per-class", "4", "--test-per-class", "1", "--batch", "16", "--workers", "0",
                         "--data", str(tmp_path / "data"), "--json", str(tmp_path / "cost.json")])
    summary = report["presets"]["tiny"]
    assert len(summary["per_experience"]) == 2
    assert summary["measured_s"]["finetune"] > 0 and summary["measured_s"]["checkpoint"] > 0
    assert abs(sum(summary["projected_share"].values()) - 1) < 1e-6
    # training epochs scale to the authors' 500 (experience 1) and 600 (experience 2) from the 1 epoch run
    first, second = summary["per_experience"]
    compute = [e["epochs"] - e["epoch_waits"] for e in (first, second)]
    expected = first["train"] + second["train"] + 499 * compute[0] + 599 * compute[1]
    assert summary["projected_s"]["train"] == pytest.approx(expected)
    assert 0 < summary["projected_overhead_share"] < 1


@pytest.mark.slow
def test_config_trace_follows_the_config_and_counts_one_validation(capsys):
    _load("config_trace").main()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("fresh run", "resume"))]
    assert len(lines) == 2
    for line in lines:
        counts = {key: int(value) for key, value in (part.strip().rsplit(" ", 1) for part in line[10:].split(", "))}
        assert counts["validations"] == 1 and counts["files"] >= 3 and counts["moves"] >= counts["back"] >= 0


@pytest.mark.slow
def test_cli_speed_times_every_command_beside_an_empty_interpreter(capsys):
    bench = _load("cli_speed")
    report = bench.main(["--repeats", "1"])
    assert set(report) == set(bench.COMMANDS) and report["python -c pass"]["vs_python"] == 1.0
    assert all(row["median_s"] > 0 for row in report.values())
    printed = capsys.readouterr().out
    assert all(name in printed for name in bench.COMMANDS)
