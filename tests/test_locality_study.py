"""The locality-degradation study (issue 31): its smoke mode runs the study's whole path (the sweep's first-experience
runs, the class-incremental runs with their joint controls through the command line, the report) on synthetic data,
and the tables in docs/results.md are the ones its report builds from the committed results files."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "studies" / "locality_degradation.py"


def study_module():
    spec = importlib.util.spec_from_file_location("locality_degradation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_study_runs_its_whole_path_in_smoke_mode(tmp_path):
    out = tmp_path / "study"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--output", str(out), "--seeds", "7"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "stage 1/2: sweep of 2 settings" in done.stdout and "stage 2/2: 3 class-incremental runs" in done.stdout
    study = study_module().load_study(out)
    assert {r["setting"] for r in study["sweep"]} == {"base", "cutmix"}
    assert set(study["main"]) == {"mhsa", "gpsa", "lpa"}
    for runs in study["main"].values():
        assert len(runs["incremental"]) == 1 and len(runs["joint"]) == 1
        assert len(runs["incremental"][0]["locality"]["layers"]) == 3  # after each of the 3 experiences
    report = (out / "study.md").read_text()
    assert report.count("| ViT (MHSA) |") == 1 and "| cutmix: CutMix" in report
    assert (out / "locality_study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    published = study_module().publish(out, tmp_path / "published")
    assert study_module().load_study(published) == study  # what the report reads, and nothing it needs is left out
    again = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--output", str(out), "--seeds", "7"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "(0 to run)" in again.stdout  # a finished study is reused, not rerun


def test_an_unknown_main_setting_is_one_line(tmp_path, capsys):
    assert study_module().main(["--output", str(tmp_path / "s"), "--main-setting", "huge"]) == 2
    assert "--main-setting 'huge' is not a sweep setting (base, long, all_images, cutmix, patch2)" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()



COMMITTED = REPO / "docs" / "results" / "locality_study"


def test_the_study_in_the_docs_is_the_committed_results():
    study = study_module().load_study(COMMITTED)
    assert {r["setting"] for r in study["sweep"]} == set(study_module().SETTINGS)  # the whole sweep, one seed each
    for model, runs in study["main"].items():  # three seeds, each with its joint control and the config it ran
        assert len(runs["incremental"]) == len(runs["joint"]) == 3, model
    assert set(study["main"]) == {"mhsa", "gpsa", "lpa"}
    assert len(list(COMMITTED.glob("main/*/*/config.yaml"))) == 18
    results = (REPO / "docs" / "results.md").read_text()
    assert study_module().sweep_table(study) in results
    assert study_module().main_table(study) in results
