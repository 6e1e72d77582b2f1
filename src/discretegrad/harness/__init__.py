"""The experiment harness: the contract with the experiments, grid expansion, execution
backends, the result store, sweeps, reports and plots (import submodules explicitly).

Nothing here knows about models; the experiments live in :mod:`discretegrad.experiments` and
reach the harness only through :mod:`discretegrad.harness.contract`.
"""
