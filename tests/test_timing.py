"""The interleaved timer: per-round ratios between predictors of known relative cost."""

import time

import numpy as np
import pytest

from confkd.errors import ParamsError
from confkd.timing import time_interleaved


def _sleeper(seconds: float):
    return lambda batch: time.sleep(seconds)


def test_interleaved_ratio_of_fake_predictors_with_known_cost():
    """Sleeping predictors cost what they sleep, whatever else the machine does: 6 ms vs 2 ms is 3x."""
    res = time_interleaved({"slow": _sleeper(0.006), "fast": _sleeper(0.002), "same": _sleeper(0.006)},
                           ["x"], batch_size=4, rounds=25, warmup=2, reference="slow")
    assert res["slow"].speedup == 1.0 and res["slow"].speedup_spread == 0.0
    assert res["fast"].speedup == pytest.approx(3.0, rel=0.2)
    assert res["same"].speedup == pytest.approx(1.0, rel=0.2)
    assert res["fast"].samples_per_second == pytest.approx(4 / 0.002, rel=0.3)
    assert res["fast"].median_s < res["slow"].median_s


def test_a_slow_moment_lands_in_every_predictor_of_its_round():
    """A fake clock where round 3 is 10x slower for everyone: the per-round ratio is unaffected."""
    state = {"t": 0.0, "round": 0, "calls": 0}
    cost = {"a": 1.0, "b": 0.25}

    def clock():
        return state["t"]

    def make(name):
        def call(batch):
            slow = 10.0 if state["calls"] // 2 == 3 + 1 else 1.0  # the 4th timed round (after 1 warm-up round)
            state["t"] += cost[name] * slow
            state["calls"] += 1
        return call

    res = time_interleaved({"a": make("a"), "b": make("b")}, [1], batch_size=1, rounds=8, warmup=1,
                           reference="a", clock=clock)
    assert res["a"].p90_s > 1.5  # the slow round did happen ...
    assert res["b"].speedup == pytest.approx(4.0) and res["b"].speedup_spread == pytest.approx(0.0)  # ... to both


def test_bad_settings():
    with pytest.raises(ParamsError, match="reference 'x'"):
        time_interleaved({"a": _sleeper(0)}, ["t"], 1, reference="x")
    with pytest.raises(ParamsError):
        time_interleaved({}, ["t"], 1)
    with pytest.raises(ParamsError):
        time_interleaved({"a": _sleeper(0)}, [], 1)


def test_untimed_call_before_each_timed_one_removes_the_cold_cache_penalty():
    """A fake clock where a small model's call costs 5 right after the big model ran and 1 when warm."""
    from confkd.timing import interleaved_rounds

    state = {"t": 0.0, "last": None}

    def make(name, warm, cold):
        def call(batch):
            state["t"] += warm if state["last"] == name else cold
            state["last"] = name
        return call

    predictors = {"big": make("big", 10.0, 10.0), "small": make("small", 1.0, 5.0)}
    cold = interleaved_rounds(predictors, ["x"], rounds=6, warmup=0, clock=lambda: state["t"])
    warm = interleaved_rounds(predictors, ["x"], rounds=6, warmup=0, clock=lambda: state["t"], untimed_before=1)
    assert cold["small"].max() == 5.0  # timed right after the big one: cold
    assert np.all(warm["small"] == 1.0) and np.all(warm["big"] == 10.0)
    with pytest.raises(ParamsError, match="untimed_before"):
        interleaved_rounds(predictors, ["x"], untimed_before=-1)
