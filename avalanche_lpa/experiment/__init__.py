"""Experiment layer: assembles the rooms below into runs from YAML configs (config, data, run, compare, report,
checkpoint, midway, folder, cli). Nothing else in the package imports it; benchmarks and models live in
:mod:`avalanche_lpa.data` and :mod:`avalanche_lpa.models`, atomic writes in :mod:`avalanche_lpa.files`."""
