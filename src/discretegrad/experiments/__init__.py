"""The papers' experiments: one module per experiment, plus ``common/`` (seeding, networks,
the generic training loop, probes, profiling) and ``data/`` (one loader module per data source).

Each experiment module declares its settings dataclass, builds an
:class:`~discretegrad.harness.contract.Experiment` and registers it; ``_modules.py`` is the one
list of them (the harness imports that list by name and nothing else from here). Import
submodules explicitly.
"""
