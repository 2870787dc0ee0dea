"""The configuration reference covers every key and option and is the committed docs/config-reference.md."""
from pathlib import Path

from avalanche_lpa.config.reference import CONFIG_HELP, config_keys, config_reference, option_help
from avalanche_lpa.training import STRATEGIES, strategy_options

REPO = Path(__file__).resolve().parents[1]


def test_every_config_key_and_strategy_option_has_a_meaning():
    keys = [key for key, _ in config_keys()]
    assert "data.class_order" in keys and "checkpoint.every_minutes" in keys and "strategy.name" in keys
    assert sorted(set(keys) - set(CONFIG_HELP)) == [] and sorted(set(CONFIG_HELP) - set(keys)) == []
    missing = [f"{name}.{option}" for name in STRATEGIES for option in strategy_options(name)
               if not option_help(name, option)]
    assert missing == []


def test_the_committed_reference_is_the_generated_one():
    committed = (REPO / "docs" / "config-reference.md").read_text()
    assert committed == config_reference(), (
        "docs/config-reference.md is stale: python -m avalanche_lpa.config.reference > docs/config-reference.md"
    )


def test_every_documentation_page_is_in_the_navigation():
    import yaml

    root = Path(__file__).resolve().parents[1]
    nav = yaml.safe_load((root / "mkdocs.yml").read_text())["nav"]

    def pages(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(nav))
    on_disk = {str(p.relative_to(root / "docs")) for p in (root / "docs").rglob("*.md")}
    assert on_disk == listed
