"""Temperature schedules: values from the papers' formulas, argument checks, and the categorical
VAE experiment's temperatures unchanged by moving its schedule into the library."""

from __future__ import annotations

import math
import pickle

import pytest

import discretegrad as dg
from discretegrad.experiments import categorical_vae


def test_constant_and_exponential_decay_values():
    assert [dg.schedules.Constant(0.3)(s) for s in (0, 1, 10**6)] == [0.3, 0.3, 0.3]
    # Jang et al. 2017: max(0.5, exp(-r t)), t the step rounded down to a multiple of N
    decay = dg.schedules.ExponentialDecay(initial=1.0, rate=1e-4, minimum=0.5, every=1000)
    assert decay(0) == 1.0 and decay(999) == 1.0
    assert decay(1000) == pytest.approx(math.exp(-0.1)) and decay(1999) == decay(1000)
    assert decay(6000) == pytest.approx(math.exp(-0.6))
    assert decay(7000) == 0.5  # exp(-0.7) = 0.497 < 0.5
    assert dg.schedules.ExponentialDecay(initial=2.0, rate=0.0, every=1)(12345) == 2.0


def test_mixed_temperature_values():
    mixed = dg.schedules.MixedTemperature(0.1, mid_tau=0.5, period=20)
    taus = [mixed(s) for s in range(61)]
    assert [s for s, t in enumerate(taus) if t == 0.1] == [0, 20, 40, 60] and set(taus) == {0.1, 0.5}


@pytest.mark.parametrize("make,name", [
    (lambda: dg.schedules.Constant(0.0), "tau"),
    (lambda: dg.schedules.ExponentialDecay(rate=-1.0), "rate"),
    (lambda: dg.schedules.ExponentialDecay(minimum=float("nan")), "minimum"),
    (lambda: dg.schedules.ExponentialDecay(every=0), "every"),
    (lambda: dg.schedules.MixedTemperature(1.0, period=2.5), "period"),
    (lambda: dg.schedules.MixedTemperature(1.0, mid_tau="0.5"), "mid_tau"),
    (lambda: dg.schedules.Constant(1.0)(-1), "step"),
    (lambda: dg.schedules.MixedTemperature(1.0)(True), "step"),
])
def test_bad_arguments_name_themselves(make, name):
    with pytest.raises(ValueError, match=f"Expected {name} "):
        make()


def test_schedules_are_plain_values():
    s = dg.schedules.ExponentialDecay(rate=1e-3)
    assert pickle.loads(pickle.dumps(s)) == s and hash(s) == hash(dg.schedules.ExponentialDecay(rate=1e-3))
    assert set(dg.schedules.SCHEDULES) == {"constant", "exponential_decay", "mixed_temperature"}


def _old_tau_at_step(p, step):
    """The categorical VAE's schedule as it was written inside the experiment before the library had one."""
    if p.mixed_temperature and step % p.mixed_m != 0:
        return p.mid_tau
    return p.tau


@pytest.mark.parametrize("settings", [
    {}, {"tau": 0.1}, {"mixed_temperature": True}, {"mixed_temperature": True, "tau": 0.01},
    {"mixed_temperature": True, "mixed_m": 7, "mid_tau": 0.3, "tau": 2.0}, {"preset": "disarm", "tau": 0.5},
])
def test_categorical_vae_temperatures_are_unchanged(settings):
    p = categorical_vae.resolve_params(categorical_vae.Settings(**settings))
    schedule = categorical_vae.temperature_schedule(p)
    for step in range(200):
        assert schedule(step) == categorical_vae.tau_at_step(p, step) == _old_tau_at_step(p, step)
