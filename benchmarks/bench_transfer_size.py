"""Sparse DAN retention as a function of the teacher-labelled transfer-set size (Ye et al. 2022's lever).

    python benchmarks/bench_transfer_size.py

Trains the `sparse_dan` configuration (KD then gold fine-tuning) with growing transfer sets:
train phrases only; + clean unlabeled reviews; + 50k and + 150k teacher-labelled augmented texts.
Writes benchmarks/results/transfer_size.{json,md}.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import machine, run_config, write_results

TRAIN_ONLY = {"method": "custom", "phases": [
    {"name": "kd", "data": "train", "prediction_weight": 1.0},
    {"name": "finetune", "data": "train", "hard_weight": 1.0},
]}


def main() -> None:
    import yaml

    from _common import ROOT

    dan = yaml.safe_load((ROOT / "params.yaml").read_text())["distill"]["configs"]["sparse_dan"]
    settings = [
        ("train only", {**TRAIN_ONLY, "augmented_size": 0,
                        "phases": [{**TRAIN_ONLY["phases"][0], "max_steps": dan["max_steps"]},
                                   {**TRAIN_ONLY["phases"][1], "max_steps": dan["finetune_steps"]}]}),
        ("train + unlabeled", {"augmented_size": 0}),
        ("train + unlabeled + 50k augmented", {"augmented_size": 50_000}),
        ("train + unlabeled + 150k augmented", {"augmented_size": 150_000}),
    ]
    import json

    counts = json.loads((ROOT / "metrics/prepare.json").read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, overrides in settings:
            m = run_config("sparse_dan_size", overrides, Path(tmp), base="sparse_dan")
            aug = overrides.get("augmented_size", 0)
            n_transfer = counts["train_rows"] if label == "train only" else counts["transfer_rows"] + aug
            rows.append({"transfer_set": label, "accuracy": m["accuracy"], "retention": m["retention"],
                         "agreement": m["agreement"], "sigma": m["sigma"], "wall_seconds": m["wall_seconds"],
                         "augmented": aug, "n_transfer": n_transfer})
            print(rows[-1], flush=True)
    md = ["# Sparse DAN: retention vs transfer-set size (SST-2)", "",
          f"Machine: {machine()}. Command: `python benchmarks/bench_transfer_size.py`.", "",
          "| transfer set | examples | test acc | retention | agreement | sigma | wall s |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['transfer_set']} | {r['n_transfer']:,} | {r['accuracy']:.4f} | {100 * r['retention']:.1f}% | {r['agreement']:.4f} | "
           f"{r['sigma']:.4f} | {r['wall_seconds']} |" for r in rows]
    write_results("transfer_size", {"machine": machine(), "rows": rows}, md)


if __name__ == "__main__":
    main()
