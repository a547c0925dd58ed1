"""Run every default distillation configuration through DVC and check the issue's targets.

    python benchmarks/bench_distill.py            # dvc repro --force of augment + every distill@<config>
    python benchmarks/bench_distill.py --collect  # only re-read metrics/distill/*.json

Writes benchmarks/results/distill.{json,md}.
"""

from __future__ import annotations

import argparse
import json

from _common import ROOT, dvc, machine, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--collect", action="store_true")
    parser.add_argument("--only", help="comma-separated configurations to (re)run; the others are collected")
    parser.add_argument("--skip-augment", action="store_true")
    args = parser.parse_args()
    import yaml

    configs = list(yaml.safe_load((ROOT / "params.yaml").read_text())["distill"]["configs"])
    seconds = {}
    old = ROOT / "benchmarks/results/distill.json"
    if (args.collect or args.only) and old.exists():
        seconds = json.loads(old.read_text()).get("stage_seconds", {})
    if not args.collect:
        if not args.skip_augment:
            s, _ = dvc("repro", "--force", "--single-item", "augment")
            seconds["augment"] = round(s, 1)
            print(f"augment: {s:.1f} s", flush=True)
        # the fast DAN configurations first, so their results are available early
        order = sorted(configs, key=lambda n: not n.startswith("sparse_dan"))
        only = args.only.split(",") if args.only else None
        for name in order:
            if only and name not in only:
                continue
            s, _ = dvc("repro", "--force", "--single-item", f"distill@{name}")
            seconds[name] = round(s, 1)
            print(f"distill@{name}: {s:.1f} s", flush=True)
    teacher = json.loads((ROOT / "metrics/teacher.json").read_text())
    rows = {name: json.loads((ROOT / f"metrics/distill/{name}.json").read_text()) for name in configs}
    from confkd.config import load_params

    params = load_params(ROOT / "params.yaml")
    kinds = {n: params.distill.resolve(n).student for n in configs}
    transformer = {n: m for n, m in rows.items() if kinds[n].kind == "transformer"}
    half = {n: m for n, m in transformer.items() if kinds[n].num_layers <= 3}
    two = {n: m for n, m in transformer.items() if kinds[n].num_layers <= 2}
    best_half = max(half, key=lambda n: half[n]["retention"]) if half else None
    best_two = max(two, key=lambda n: two[n]["retention"]) if two else None
    distill_seconds = sum(v for k, v in seconds.items() if k != "augment")
    results = {
        "machine": machine(), "teacher_accuracy": teacher["accuracy"], "stage_seconds": seconds,
        "distill_total_minutes": round(distill_seconds / 60, 1), "configs": rows,
        "best_half_depth": best_half, "best_half_depth_retention": half[best_half]["retention"] if best_half else None,
        "best_two_layer": best_two, "best_two_layer_retention": two[best_two]["retention"] if best_two else None,
        "sparse_dan_retention": rows.get("sparse_dan", {}).get("retention"),
        "sparse_dan_no_kd_retention": rows.get("sparse_dan_no_kd", {}).get("retention"),
    }
    md = ["# Distillation benchmark (SST-2)", "", f"Machine: {machine()}. Command: `python benchmarks/bench_distill.py`.",
          f"Teacher test accuracy: {teacher['accuracy']:.4f}.", "",
          "| configuration | student | params | test acc | retention | agreement | sigma | dev acc | train s |",
          "|---|---|---|---|---|---|---|---|---|"]
    for n, m in rows.items():
        k = kinds[n]
        student = f"{k.num_layers}L transformer" if k.kind == "transformer" else f"DAN {k.max_features // 1000}k x {k.embed_dim}"
        md.append(f"| {n} | {student} | {m['parameters'] / 1e6:.1f}M | {m['accuracy']:.4f} | {100 * m['retention']:.1f}% | "
                  f"{m['agreement']:.4f} | {m['sigma']:.4f} | {m['dev_accuracy']:.4f} | {seconds.get(n, m['train_seconds'])} |")
    md += ["", "| target | result | met |", "|---|---|---|"]

    def row(label, value, ok):
        md.append(f"| {label} | {value} | {'yes' if ok else '**no**'} |")

    if best_half:
        r = half[best_half]["retention"]
        row("best student with <= half the teacher's layers keeps >= 99%", f"{best_half}: {100 * r:.1f}%", r >= 0.99)
    if best_two:
        r = two[best_two]["retention"]
        row("2-layer student keeps >= 97%", f"{best_two}: {100 * r:.1f}%", r >= 0.97)
    if "sparse_dan" in rows and "sparse_dan_no_kd" in rows:
        a, b = rows["sparse_dan"]["retention"], rows["sparse_dan_no_kd"]["retention"]
        row("sparse_dan keeps >= 93%", f"{100 * a:.1f}%", a >= 0.93)
        row("sparse_dan beats sparse_dan_no_kd", f"{100 * a:.1f}% vs {100 * b:.1f}%", a > b)
    if seconds:
        row("all distill configurations <= 60 min", f"{distill_seconds / 60:.1f} min", distill_seconds <= 3600)
    write_results("distill", results, md)


if __name__ == "__main__":
    main()
