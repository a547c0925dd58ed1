"""Teacher fine-tuning variants on the embedded default (SST-2), against the pipeline's teacher.

    python benchmarks/bench_teacher_variants.py [--variants ema,ema_1epoch] [--with-default] [--collect]

Each variant is the ``teacher`` section of params.yaml with a few keys overridden, trained on the
repository's prepared data into a scratch folder (the pipeline's teacher is left alone). Variants are
compared on the **dev** split, which is what a change of the default would be chosen on; test is
reported. The default row comes from the committed pipeline run (``metrics/teacher.json``) unless
``--with-default`` retrains it here too. Each finished variant is saved at once, so an interrupted
benchmark keeps what it measured; ``--collect`` only rewrites the report from the saved runs.
Writes benchmarks/results/teacher_variants.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import RESULTS, ROOT, machine, write_results

VARIANTS: dict[str, tuple[str, dict]] = {
    "default": ("params.yaml as it is", {}),
    "ema": ("EMA of the weights (decay 0.999)", {"ema_decay": 0.999}),
    "ema_1epoch": ("EMA 0.999, one epoch (learning rate decays to 0 at its end)",
                   {"ema_decay": 0.999, "epochs": 1, "max_steps": None}),
    "ema_llrd_1epoch": ("EMA 0.999, one epoch, layer-wise LR decay 0.85",
                        {"ema_decay": 0.999, "epochs": 1, "max_steps": None, "layerwise_lr_decay": 0.85}),
    "ema_lr5e-5": ("EMA 0.999, learning rate 5e-5 (half)", {"ema_decay": 0.999, "learning_rate": 5e-5}),
}
KEYS = ("dev_accuracy", "dev_nll", "dev_ece", "accuracy", "macro_f1", "nll", "ece", "steps", "best_step",
        "train_seconds", "train_samples_per_second")


def run_variant(overrides: dict, scratch: Path) -> dict:
    from confkd.config import load_params, parse_params
    from confkd.layout import DEFAULT, TeacherPaths
    from confkd.training.teacher import train_teacher

    raw = load_params(ROOT / "params.yaml").model_dump(by_alias=True)
    raw["teacher"].update(overrides)
    paths = TeacherPaths(prepared_dir=ROOT / DEFAULT.prepared_dir, model_dir=scratch / "model",
                         logits_dir=scratch / "logits", metrics_path=scratch / "teacher.json",
                         history_path=scratch / "history.csv", checkpoint_dir=scratch / "checkpoints")
    t0 = time.perf_counter()
    metrics = train_teacher(parse_params(raw), paths)
    metrics["stage_seconds"] = round(time.perf_counter() - t0, 1)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="ema,ema_1epoch,ema_llrd_1epoch,ema_lr5e-5",
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--with-default", action="store_true", help="retrain the default too (else: pipeline metrics)")
    parser.add_argument("--collect", action="store_true", help="no training: rewrite the report from the saved runs")
    args = parser.parse_args()
    from confkd.runtime import setup_logging

    setup_logging("INFO")  # the teacher's per-evaluation dev metrics, as in the pipeline's own log
    names = [] if args.collect else args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    if args.with_default and "default" not in names:
        names.insert(0, "default")
    out_file = RESULTS / "teacher_variants.json"
    results = json.loads(out_file.read_text()) if out_file.exists() else {}
    runs: dict = results.get("runs", {})
    if "default" not in names and not (args.collect and "default" in runs):
        pipeline = json.loads((ROOT / "metrics" / "teacher.json").read_text())
        runs["default"] = {**{k: pipeline[k] for k in KEYS}, "source": "pipeline run (metrics/teacher.json)"}
    for name in names:
        with tempfile.TemporaryDirectory() as tmp:
            m = run_variant(VARIANTS[name][1], Path(tmp))
        runs[name] = {**{k: m[k] for k in KEYS}, "stage_seconds": m["stage_seconds"], "source": "this benchmark"}
        print(name, runs[name], flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps({"machine": machine(), "runs": runs}, indent=2) + "\n")

    cmd = "python benchmarks/bench_teacher_variants.py --variants " + ",".join(n for n in runs if n != "default")
    md = ["# Teacher fine-tuning variants (SST-2; chosen on dev, test reported)", "",
          f"Machine: {machine()}. Command: `{cmd}`.", "",
          "| variant | what changes | dev acc | dev NLL | test acc | test NLL | test ECE | steps (best) | train s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for name, r in runs.items():
        md.append(f"| {name} | {VARIANTS.get(name, ('', {}))[0]} | {r['dev_accuracy']:.4f} | {r['dev_nll']:.3f} | "
                  f"{r['accuracy']:.4f} | {r['nll']:.3f} | {r['ece']:.3f} | {r['steps']} ({r['best_step']}) | "
                  f"{r['train_seconds']:.0f} |")
    sizes = json.loads((ROOT / "metrics" / "prepare.json").read_text())  # the splits every variant was scored on
    md += ["", "The default row comes from the " + runs["default"]["source"] + f". Test has {sizes['test_rows']} "
           f"sentences (standard error of an accuracy near 0.88: ±{(0.88 * 0.12 / sizes['test_rows']) ** 0.5:.3f}); "
           f"dev has {sizes['dev_rows']}."]
    write_results("teacher_variants", {"machine": machine(), "runs": runs}, md)


if __name__ == "__main__":
    main()
