"""The published tables are rebuilt from the committed results files, so a number in the docs is a number measured."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results" / "fashion_mnist"


def _make_tables():
    spec = importlib.util.spec_from_file_location("make_tables", RESULTS / "make_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_dytox_comparison_in_the_docs_is_the_committed_runs():
    tables = _make_tables()
    runs = RESULTS / "runs"
    for _, folder in tables.DYTOX_ROWS:  # three seeds of every row, each with the config it ran
        seeds = sorted(p.name for p in runs.glob(folder + "-s*") if (p / "results.json").is_file())
        assert len(seeds) == 3 and all((runs / Path(folder).parent / s / "config.yaml").is_file() for s in seeds), folder
    table = tables.dytox_table(runs)
    assert table in (REPO / "docs" / "dytox.md").read_text()


def test_the_readme_table_is_the_committed_runs():
    tables = _make_tables()
    runs = RESULTS / "runs"
    for model in ("lpa", "gpsa", "mhsa"):  # three seeds and their joint controls, each with the config it ran
        incremental, joint = tables.load(runs / "main" / f"{model}-lpa")
        assert len(incremental) == 3 and len(joint) == 3, model
    table = tables.main_table(runs)
    assert table in (REPO / "README.md").read_text()
    assert table in (REPO / "docs" / "results.md").read_text()


def test_every_table_of_the_results_page_is_the_committed_runs():
    tables = _make_tables()
    runs = RESULTS / "runs"
    for _, folder in tables.VARIANTS + tables.ABLATIONS:  # three seeds of every row, each with the config it ran
        seeds = sorted(p for p in runs.glob(folder + "-s*") if not p.name.endswith("-joint"))
        assert len(seeds) == 3 and all((s / "config.yaml").is_file() and (s / "results.json").is_file()
                                       for s in seeds), folder
    page = (REPO / "docs" / "results.md").read_text()
    for table in (tables.variants_table, tables.ablation_table, tables.layers_table):
        assert table(runs) in page, table.__name__
