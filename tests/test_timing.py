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


def _fake_backends(costs: dict, spike_every: int = 0, spike: float = 0.0):
    """Backends that advance a fake clock by their cost per call; every ``spike_every``-th call of any backend
    also pays ``spike`` (an interrupt)."""
    state = {"t": 0.0, "calls": 0}

    def make(name):
        def call(batch):
            state["calls"] += 1
            state["t"] += costs[name] + (spike if spike_every and state["calls"] % spike_every == 0 else 0.0)
            return np.zeros((len(batch), 2))
        return call

    return {key: make(key) for key in costs}, (lambda: state["t"])


def test_fast_backends_are_timed_in_blocks_of_back_to_back_calls():
    """Hand-computed: with blocks of >= 5 ms, a 0.2 ms backend runs 25 calls per block, a 6 ms one 1; the seconds
    are per call, so the speed-up is the true 30x."""
    from confkd.export.latency import calls_per_block, measure_interleaved

    backends, clock = _fake_backends({("teacher", "onnx_int8"): 0.006, ("dan", "numpy_fp32"): 0.0002})
    assert calls_per_block(backends[("dan", "numpy_fp32")], ["x"], 0.005, clock) == 25
    assert calls_per_block(backends[("teacher", "onnx_int8")], ["x"], 0.005, clock) == 1
    assert calls_per_block(backends[("dan", "numpy_fp32")], ["x"], 0.0, clock) == 1  # blocks off
    run = measure_interleaved(backends, ["a", "b", "c"], [1], warmup=1, rounds=5, seed=0, clock=clock)
    assert run.calls[1] == {("teacher", "onnx_int8"): 1, ("dan", "numpy_fp32"): 25}
    assert np.allclose(run.seconds[1][("dan", "numpy_fp32")], 0.0002)
    med, spread = run.speedup("dan", "numpy_fp32", ("teacher", "onnx_int8"), 1)
    assert med == pytest.approx(30.0) and spread == pytest.approx(0.0, abs=1e-9)


def test_blocks_damp_an_interrupt_that_a_single_call_cannot():
    """Every 7th call pays a 1 ms interrupt. Timed one call at a time, the 0.2 ms backend's ratio swings by
    a factor of 6 between rounds (spread of the ratio >= 0.8); in blocks of 25 calls every block holds 3-4 interrupts and the spread
    falls below 20%."""
    from confkd.export.latency import measure_interleaved

    costs = {("teacher", "onnx_int8"): 0.006, ("dan", "numpy_fp32"): 0.0002}
    backends, clock = _fake_backends(costs, 7, 0.001)
    single = measure_interleaved(backends, ["x"], [1], warmup=0, rounds=40, seed=0, min_block_seconds=0.0, clock=clock)
    backends, clock = _fake_backends(costs, 7, 0.001)
    blocked = measure_interleaved(backends, ["x"], [1], warmup=0, rounds=40, seed=0, clock=clock)
    ref = ("teacher", "onnx_int8")
    _, spread_single = single.speedup("dan", "numpy_fp32", ref, 1)
    _, spread_blocked = blocked.speedup("dan", "numpy_fp32", ref, 1)
    assert spread_single >= 0.8 and spread_blocked < 0.2


def test_rounds_and_warmup_per_batch_size():
    """A mapping batch size -> rounds gives each batch size its own number of timed rounds (one ratio per
    round); the params schema rejects a mapping that leaves a batch size out, or zero rounds."""
    from confkd.config import ExportLatency
    from confkd.export.latency import measure_interleaved

    backends, clock = _fake_backends({("teacher", "onnx_int8"): 0.006, ("tinybert", "onnx_int8"): 0.003})
    run = measure_interleaved(backends, ["a", "b", "c", "d"], [1, 4], warmup={1: 2, 4: 0}, rounds={1: 7, 4: 3},
                              seed=0, clock=clock)
    assert [len(run.seconds[b][("teacher", "onnx_int8")]) for b in (1, 4)] == [7, 3]
    med, _ = run.speedup("tinybert", "onnx_int8", ("teacher", "onnx_int8"), 4)
    assert med == pytest.approx(2.0)

    cfg = ExportLatency(batch_sizes=[1, 32, 256], warmup={1: 3, 32: 3, 256: 1}, repeats={1: 20, 32: 20, 256: 5})
    assert (cfg.repeats_for(256), cfg.warmup_for(32)) == (5, 3)
    assert cfg.rounds_text() == "3 warm-up + 20 timed rounds at b1 and b32, 1 warm-up + 5 timed rounds at b256"
    assert ExportLatency(batch_sizes=[1], warmup=2, repeats=9).rounds_text() == "2 warm-up + 9 timed rounds"
    with pytest.raises(ValueError, match=r"repeats gives no number for batch size\(s\) \[256\]"):
        ExportLatency(batch_sizes=[1, 256], repeats={1: 20})
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        ExportLatency(batch_sizes=[1], repeats={1: 0})
