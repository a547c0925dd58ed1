"""Does a different timing design make the DAN's speed-up over the int8 teacher hold still between runs?

    python benchmarks/bench_timing_stability.py [--runs 3] [--designs default long_blocks more_rounds]

The export benchmark (``bench_export.py``) found the DAN's speed-up moving by more than 15% between runs on
unchanged models while every transformer student's held within 10%. This benchmark asks whether that is the
timer's fault. It times the teacher's and the DAN's exported backends only (ONNX fp32 and int8, plus the DAN's
numpy runtime), interleaved with the export stage's own code (``confkd.export.latency.measure_interleaved``),
under several designs, the designs alternating run by run so that a slow stretch of the machine hits every
design alike:

* ``default``      -- params.yaml's export.latency: 20 rounds, timed blocks of >= 5 ms;
* ``long_blocks``  -- timed blocks of >= 50 ms (the DAN called ~25 times back to back per block at b32);
* ``more_rounds``  -- 60 rounds instead of 20.

For each run and design it reports the speed-up at batch 1 and 32 as the stage summarises it (the median
over rounds of the per-round ratio, each model in its fastest backend), and, as a second estimator, the
ratio of the two backends' fastest rounds (timeit's ``min``: the machine at its least disturbed). The
spread over runs is max / min - 1, as in ``bench_export.py``. Needs ``dvc repro export`` first. Writes
benchmarks/results/timing_stability.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from _common import ROOT, machine, write_results

DESIGNS = {  # name -> (rounds at b1 and b32, minimum seconds of a timed block)
    "default": (None, None),
    "long_blocks": (None, 0.05),
    "more_rounds": (60, None),
}
TEACHER, DAN = "teacher", "sparse_dan"
BATCH_SIZES = (1, 32)


def spread(values: list[float]) -> float:
    return max(values) / min(values) - 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from threadpoolctl import threadpool_limits

    from confkd.config import load_params
    from confkd.export import latency as lat
    from confkd.export.stage import ExportPaths, saved_backends

    params = load_params(ROOT / "params.yaml")
    cfg = params.export.latency
    paths = ExportPaths()
    lat.set_torch_threads(cfg.num_threads)
    backends, texts = saved_backends(params, [TEACHER, DAN], paths)
    backends = {k: v for k, v in backends.items() if k[1] != "torch"}  # the teacher's fastest is an ONNX one

    rows: dict[str, list[dict]] = {d: [] for d in args.designs}
    t_start = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        for run_i in range(args.runs):
            for design in args.designs:
                rounds, block = DESIGNS[design]
                t0 = time.perf_counter()
                run = lat.measure_interleaved(
                    backends, texts, BATCH_SIZES, {b: cfg.warmup[b] for b in BATCH_SIZES},
                    {b: rounds or cfg.repeats[b] for b in BATCH_SIZES}, params.seed,
                    min_block_seconds=block or lat.MIN_BLOCK_SECONDS)
                row = {"run": run_i + 1, "seconds": round(time.perf_counter() - t0, 1)}
                for b in BATCH_SIZES:
                    teacher, dan = run.fastest(TEACHER, b), run.fastest(DAN, b)
                    median, within = run.speedup(DAN, dan, (TEACHER, teacher), b)
                    t_sec, d_sec = run.seconds[b][(TEACHER, teacher)], run.seconds[b][(DAN, dan)]
                    row.update({f"median_b{b}": median, f"within_run_spread_b{b}": within,
                                f"min_ratio_b{b}": float(t_sec.min() / d_sec.min()),
                                f"teacher_ms_b{b}": float(np.median(t_sec) * 1e3),
                                f"dan_ms_b{b}": float(np.median(d_sec) * 1e3), f"dan_backend_b{b}": dan})
                rows[design].append(row)
                print(f"run {run_i + 1} {design:12s} " + "  ".join(
                    f"b{b}: median {row[f'median_b{b}']:6.1f}x min-ratio {row[f'min_ratio_b{b}']:6.1f}x "
                    f"(teacher {row[f'teacher_ms_b{b}']:.2f} ms, DAN {row[f'dan_ms_b{b}']:.3f} ms)" for b in BATCH_SIZES),
                      flush=True)

    summary = {d: {f"{est}_b{b}_spread_over_runs": spread([r[f"{est}_b{b}"] for r in rs])
                   for est in ("median", "min_ratio") for b in BATCH_SIZES} for d, rs in rows.items()}
    wall = time.perf_counter() - t_start
    lines = ["# Does a different timer make the DAN's speed-up hold still?", "",
             f"Machine: {machine()}. Command: `python benchmarks/bench_timing_stability.py --runs {args.runs}` "
             f"(after `dvc repro export`); {wall:.0f} s. The teacher's and the DAN's exported backends timed "
             "interleaved with the export stage's code, designs alternating run by run. Designs: `default` = "
             f"params.yaml's export.latency ({cfg.repeats[32]} rounds, timed blocks >= "
             f"{lat.MIN_BLOCK_SECONDS * 1e3:g} ms); `long_blocks` = blocks >= 50 ms; `more_rounds` = 60 rounds. "
             "Estimators: `median` = the stage's speed-up (median over rounds of the per-round ratio, fastest "
             "backends); `min ratio` = the teacher's fastest round / the DAN's fastest round. Spread over runs = "
             "max / min - 1 (target <= 15%).", "",
             "| design | run | b1 median | b1 min ratio | b32 median | b32 min ratio | teacher b32 (ms) | DAN b32 (ms) |",
             "|---|---|---|---|---|---|---|---|"]
    for d, rs in rows.items():
        for r in rs:
            lines.append(f"| {d} | {r['run']} | {r['median_b1']:.1f}x | {r['min_ratio_b1']:.1f}x | {r['median_b32']:.1f}x "
                         f"| {r['min_ratio_b32']:.1f}x | {r['teacher_ms_b32']:.1f} | {r['dan_ms_b32']:.3f} |")
    lines += ["", "| design | b1 median | b1 min ratio | b32 median | b32 min ratio |", "|---|---|---|---|---|"]
    for d, s in summary.items():
        lines.append(f"| {d} | " + " | ".join(f"{s[f'{est}_b{b}_spread_over_runs']:.1%}" for b in BATCH_SIZES
                                             for est in ("median", "min_ratio")) + " |")
    write_results("timing_stability", {"machine": machine(), "runs": rows, "spread_over_runs": summary,
                                       "wall_seconds": round(wall, 1)}, lines)


if __name__ == "__main__":
    main()
