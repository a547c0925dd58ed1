"""Benchmark of the foundation stages on the embedded default (SST-2).

Times ``prepare``, ``validate`` and ``teacher`` (each forced, through ``dvc repro``), then a second
``dvc repro`` with nothing changed, and collects the teacher's accuracy and throughput.

    python benchmarks/bench_foundation.py            # full run (~20 min on 2 CPU cores)
    python benchmarks/bench_foundation.py --noop     # only the no-change repro timing

Writes benchmarks/results/foundation.json and foundation.md.
"""

from __future__ import annotations

import argparse
import json

from _common import RESULTS, ROOT, dvc, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noop", action="store_true", help="only time a repro with nothing changed")
    args = parser.parse_args()
    out_file = RESULTS / "foundation.json"
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    if not args.noop:
        stage_seconds = {}
        for stage in ("prepare", "validate", "teacher"):
            seconds, _ = dvc("repro", "--force", "--single-item", stage)
            stage_seconds[stage] = round(seconds, 1)
            print(f"{stage}: {seconds:.1f} s", flush=True)
        teacher = json.loads((ROOT / "metrics" / "teacher.json").read_text())
        prepared = json.loads((ROOT / "metrics" / "prepare.json").read_text())
        results.update({
            "stage_seconds": stage_seconds,
            "prepare_validate_teacher_seconds": round(sum(stage_seconds.values()), 1),
            "teacher_test_accuracy": teacher["accuracy"],
            "teacher_test_macro_f1": teacher["macro_f1"],
            "teacher_test_nll": teacher["nll"],
            "teacher_test_ece": teacher["ece"],
            "teacher_dev_accuracy": teacher["dev_accuracy"],
            "teacher_train_seconds": teacher["train_seconds"],
            "teacher_train_samples_per_second": teacher["train_samples_per_second"],
            "teacher_inference_samples_per_second": teacher["inference_samples_per_second"],
            "teacher_steps": teacher["steps"],
            "teacher_best_step": teacher["best_step"],
            "train_rows": prepared["train_rows"],
            "dev_rows": prepared["dev_rows"],
            "test_rows": prepared["test_rows"],
            "transfer_rows": prepared["transfer_rows"],
        })
    seconds, stdout = dvc("repro", "teacher")
    results["noop_repro_seconds"] = round(seconds, 2)
    results["noop_repro_ran_stages"] = stdout.count("Running stage")
    results["machine"] = machine()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(results, indent=2) + "\n")
    targets = [
        ("teacher test accuracy (SST-2)", f"{results.get('teacher_test_accuracy', float('nan')):.4f}", ">= 0.89"),
        ("prepare + validate + teacher", f"{results.get('prepare_validate_teacher_seconds', float('nan')) / 60:.1f} min", "<= 20 min"),
        ("teacher training throughput", f"{results.get('teacher_train_samples_per_second', float('nan')):.1f} samples/s", "reported"),
        ("no-change `dvc repro`", f"{results['noop_repro_seconds']:.1f} s, {results['noop_repro_ran_stages']} stages run", "<= 15 s, none"),
    ]
    md = ["# Foundation benchmark", "", f"Machine: {results['machine']}. Command: `python benchmarks/bench_foundation.py`.", "",
          "| measure | result | target |", "|---|---|---|"]
    md += [f"| {a} | {b} | {c} |" for a, b, c in targets]
    if "stage_seconds" in results:
        md += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in results["stage_seconds"].items())]
    (RESULTS / "foundation.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
