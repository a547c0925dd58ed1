"""The DAN's numpy runtime: the compiled n-gram kernel (numba) against the numpy look-up it replaced.

    python benchmarks/bench_dan_runtime.py [--runs 3] [--rounds 30] [--dan sparse_dan]

Reads the export stage's ``models/export/<dan>`` (run ``dvc repro export`` first) and the test split. Both
paths of ``confkd.export.dan_runtime.NumpyDANPredictor`` (``compiled=True`` / ``compiled=False``) are timed
with the export stage's own interleaved timer (``confkd.export.latency.measure_interleaved``, numpy's BLAS
single-threaded as the stage runs it), end to end from raw text, at batch 1, 32 and 256; the speed-up is the
median of the per-round ratios numpy time / compiled time. Also: the largest probability difference between
the two paths on the whole test split, and the peak resident memory of a fresh process serving each path
(interpreter and libraries included). Writes benchmarks/results/dan_runtime.{json,md}.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from _common import ROOT, machine, write_results

BATCH_SIZES = (1, 32, 256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=30, help="timed interleaved rounds per batch size and run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dan", default="sparse_dan")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from threadpoolctl import threadpool_limits

    from confkd.export import latency as lat
    from confkd.export.dan_runtime import NumpyDANPredictor, numba_available
    from confkd.export.memory import probe_memory
    from confkd.training.teacher import load_prepared

    if not numba_available():
        sys.exit("numba is not installed: there is no compiled kernel to compare")
    folder = ROOT / "models/export" / args.dan
    texts = load_prepared(ROOT / "data/prepared")[1]["test"]["text"].tolist()
    t0 = time.perf_counter()
    paths = {kernel: NumpyDANPredictor(folder, compiled=kernel == "numba") for kernel in ("numba", "numpy")}
    with threadpool_limits(limits=1, user_api="blas"):
        probs = {k: p.predict_proba(texts) for k, p in paths.items()}
        max_diff = float(np.abs(probs["numba"] - probs["numpy"]).max())
        same_labels = bool((probs["numba"].argmax(1) == probs["numpy"].argmax(1)).all())
        backends = {(args.dan, k): lat.predictor_backend(p) for k, p in paths.items()}
        runs = []
        for i in range(args.runs):
            run = lat.measure_interleaved(backends, texts, BATCH_SIZES, args.warmup, args.rounds, seed=42 + i)
            row = {}
            for b in BATCH_SIZES:
                speedup, spread = run.speedup(args.dan, "numba", (args.dan, "numpy"), b)
                row[f"b{b}"] = {"numba_ms": run.median_ms(args.dan, "numba", b),
                                "numpy_ms": run.median_ms(args.dan, "numpy", b),
                                "speedup": speedup, "spread": spread}
            runs.append(row)
    memory = {k: probe_memory(folder, runtime, texts[:32], num_threads=1, expect_kernel=k).peak_rss_mb
              for k, runtime in (("numpy", "numpy_fp32_uncompiled"), ("numba", "numpy_fp32"))}
    wall = time.perf_counter() - t0

    command = "python benchmarks/bench_dan_runtime.py" + "".join(f" {a}" for a in sys.argv[1:])
    lines = ["| batch | " + " | ".join(f"run {i + 1}: numpy / compiled ms, speed-up" for i in range(len(runs))) + " |",
             "|---|" + "---|" * len(runs)]
    for b in BATCH_SIZES:
        cells = [f"{r[f'b{b}']['numpy_ms']:.3f} / {r[f'b{b}']['numba_ms']:.3f}, **{r[f'b{b}']['speedup']:.2f}x** "
                 f"(spread {r[f'b{b}']['spread']:.0%})" for r in runs]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    md = [
        "# The DAN runtime: compiled n-gram kernel vs the numpy look-up",
        "",
        f"Machine: {machine()}. Command: `{command}` (after `dvc repro export`); {wall:.0f} s. Model: "
        f"`models/export/{args.dan}`; texts: the test split ({len(texts)}). Both paths of `NumpyDANPredictor` timed "
        f"end to end (raw text -> probabilities) with the export stage's interleaved timer, {args.warmup} warm-up + "
        f"{args.rounds} rounds per batch size and run, numpy's BLAS single-threaded; speed-up = median of the per-round "
        "ratios numpy time / compiled time, spread = (p90 - p10) / median.",
        "",
        *lines,
        "",
        f"- Largest probability difference between the two paths on the test split: {max_diff:.2e}; "
        f"the same predicted label for every text: {'yes' if same_labels else '**no**'}.",
        f"- Peak resident memory of a fresh process serving a batch of 32: numpy path {memory['numpy']:.0f} MiB, "
        f"compiled {memory['numba']:.0f} MiB (numba and llvmlite loaded).",
    ]
    write_results("dan_runtime", {"machine": machine(), "command": command, "wall_seconds": round(wall, 1),
                                  "dan": args.dan, "texts": len(texts), "max_prob_diff": max_diff,
                                  "same_labels": same_labels, "runs": runs, "peak_rss_mb": memory}, md)


if __name__ == "__main__":
    main()
