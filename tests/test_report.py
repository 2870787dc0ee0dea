"""results.json (assembly, atomic write, round trip) and the PNG figures."""
import json
import math
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import avalanche_lpa
from avalanche_lpa import report
from avalanche_lpa.report import (
    collect_results,
    package_versions,
    plot_accuracy_curves,
    plot_accuracy_matrix,
    plot_locality,
    plot_runs,
    read_results,
    to_jsonable,
    write_results,
)
from avalanche_lpa.metrics import summarize_matrix

R = [[0.6, 0.0, 0.0], [0.9, 0.8, 0.0], [0.7, 0.5, 0.6]]
LOC = "Locality_Stream/eval_phase/test_stream"


def _history(distance_growth=0.1):
    """A hand-made ``get_all_metrics()`` with accuracies and locality of 2 layers x 2 heads after 3 steps."""
    xs = [10, 20, 30]
    history = {f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{j:03d}": (xs, [r[j] for r in R]) for j in range(3)}
    heads = {(l, h): [1.0 + l + 0.5 * h + distance_growth * s for s in range(3)] for l in range(2) for h in range(2)}
    for (l, h), values in heads.items():
        history[f"{LOC}/Layer{l:02d}/Head{h:02d}"] = (xs, values)
    for l in range(2):
        history[f"{LOC}/Layer{l:02d}"] = (xs, [(heads[l, 0][s] + heads[l, 1][s]) / 2 for s in range(3)])
    history[LOC] = (xs, [sum(heads[k][s] for k in heads) / 4 for s in range(3)])
    return history


def _is_png(path: Path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 50 and height > 50 and len(data) > 1000
    return width, height


def test_package_versions():
    versions = package_versions()
    assert versions["avalanche_lpa"] == avalanche_lpa.__version__
    assert versions["torch"] and versions["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert versions["avalanche-lib"] and versions["timm"] and versions["python"]


def test_to_jsonable_converts_and_rejects():
    value = {"t": torch.tensor([[1.0, 2.0]]), "n": np.float32(0.5), "a": np.arange(2), "nan": math.nan,
             "p": Path("x/y"), 3: (1, torch.device("cpu"))}
    assert to_jsonable(value) == {"t": [[1.0, 2.0]], "n": 0.5, "a": [0, 1], "nan": None, "p": "x/y", "3": [1, "cpu"]}
    with pytest.raises(TypeError, match="object"):
        to_jsonable({"bad": object()})


def test_collect_results_assembles_the_run():
    results = collect_results(_history(), config={"lr": 1e-3}, seed=1993, device=torch.device("cpu"),
                              wall_time_s=12.5, exp_sizes=[10, 20, 30], extra={"note": "toy"})
    assert results["accuracy_matrix"] == R
    expected = summarize_matrix(R, [10, 20, 30]).as_dict()
    expected.pop("accuracy_matrix")
    assert results["summary"] == expected
    assert (results["seed"], results["device"], results["wall_time_s"], results["note"]) == (1993, "cpu", 12.5, "toy")
    assert results["config"] == {"lr": 1e-3} and results["versions"]["avalanche_lpa"] == avalanche_lpa.__version__
    locality = results["locality"]
    assert locality["eval_points"] == [10, 20, 30]
    assert np.allclose(locality["heads"][2], [[1.2, 1.7], [2.2, 2.7]])  # step 2: 1 + l + h/2 + 0.2
    assert locality["layers"][0] == pytest.approx([1.25, 2.25]) and locality["mean"][1] == pytest.approx(1.85)
    without = {k: v for k, v in _history().items() if not k.startswith("Locality")}
    assert collect_results(without)["locality"] is None


def test_results_round_trip(tmp_path):
    results = collect_results(_history(), config={"model": {"depth": 5}, "tags": ("a", "b")}, seed=0)
    path = write_results(tmp_path / "run" / "results.json", results)
    assert path.exists() and read_results(path) == to_jsonable(results)
    assert json.loads(path.read_text())["summary"]["avg_forgetting_max"] == pytest.approx(0.25)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_results(path, {"value": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_results(path, {"value": 2, "bad": object()})  # fails while serializing
    assert path.read_bytes() == before

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(report.results.os, "replace", crash)  # fails after the temporary file was written
    with pytest.raises(OSError, match="disk full"):
        write_results(path, {"value": 3})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left behind


def test_plots_are_valid_pngs(tmp_path):
    _is_png(plot_accuracy_matrix([[0.9, None], [0.5, 0.8]], tmp_path / "matrix.png"))
    _is_png(plot_accuracy_curves({"LPA": [0.9, 0.7, 0.6], "ViT": [0.9, 0.6, 0.4]}, tmp_path / "curves.png"))
    narrow = _is_png(plot_locality({"LPA": [[1.0], [1.1]]}, tmp_path / "one_layer.png"))
    wide = _is_png(plot_locality({"LPA": [[1.0, 1.5, 2.0]] * 3, "GPSA": [[1.1, 1.7, 2.4], [1.2, 1.9, 2.8]]},
                                 tmp_path / "locality.png"))
    assert wide[0] > narrow[0]  # one panel per layer
    with pytest.raises(ValueError, match="locality"):
        plot_locality({"LPA": []}, tmp_path / "empty.png")


def test_plot_runs_draws_every_figure(tmp_path):
    growth = {"LPA": 0.05, "GPSA": 0.1, "ViT (MHSA)": 0.3}
    runs = {name: collect_results(_history(g)) for name, g in growth.items()}
    paths = plot_runs(runs, tmp_path / "figures")
    assert set(paths) == {"accuracy_curves", "locality", "accuracy_matrix_LPA", "accuracy_matrix_GPSA",
                          "accuracy_matrix_ViT_MHSA"}
    for path in paths.values():
        _is_png(path)
    assert sorted(os.listdir(tmp_path / "figures")) == sorted(p.name for p in paths.values())


def test_plots_explain_a_missing_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"avalanche-lpa\[plots\]"):
        plot_accuracy_curves({"LPA": [0.5]}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_accuracy_curves_start_at_zero_and_show_seeds_as_a_band(tmp_path, monkeypatch):
    from avalanche_lpa.report import figures as figures_module

    figures = []
    monkeypatch.setattr(figures_module, "save_figure", lambda figure, path, dpi: figures.append(figure) or path)
    figures_module.plot_accuracy_curves({"lpa": [[0.9, 0.6], [0.8, 0.5]], "one seed": [0.7, 0.4]}, tmp_path / "a.png")
    axes = figures[0].axes[0]
    assert axes.get_ylim() == (0.0, 100.0)
    mean = next(line for line in axes.get_lines() if line.get_label() == "lpa (2 seeds)")
    assert list(mean.get_ydata()) == pytest.approx([85.0, 55.0])  # the mean over seeds, in %
    assert len(axes.collections) == 1  # one std band: for the run with two seeds only


def _group(run_card):
    results = {"params": 1e6, "summary": {"avg_incremental_accuracy": 0.5, "last_accuracy": 0.4,
                                         "avg_forgetting_max": 0.1}, "wall_time_s": 1.0, "run_card": run_card}
    return {"incremental": [results], "joint": []}


def test_the_comparison_names_the_run_card_facts_where_rows_differ():
    from avalanche_lpa.report import comparison_table

    card = {"world_size": 1, "batch_per_process": 64, "global_batch": 64, "precision": "fp32"}
    same = comparison_table({"a": _group(card), "b": _group(dict(card))})
    assert "run card" not in same  # nothing to say where every run is alike
    differs = comparison_table({"a": _group(card), "b": _group({**card, "world_size": 2, "global_batch": 128})})
    header, rule, first, second = differs.strip().splitlines()
    assert header.endswith("| run card |") and rule.count("---") == 12
    assert first.endswith("| global_batch 64, world_size 1 |") and second.endswith("| global_batch 128, world_size 2 |")
