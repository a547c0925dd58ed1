"""Helpers shared by the benchmark scripts (run from the repository root after `dvc repro teacher`)."""

from __future__ import annotations

import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def dvc(*args: str, check: bool = True) -> tuple[float, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        sys.exit(f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, proc.stdout + proc.stderr


def run_config(name: str, overrides: dict, scratch: Path, base: str | None = None) -> dict:
    """Train one distillation configuration (``base`` from params.yaml, deep-merged with
    ``overrides``) into ``scratch``, reusing the repository's prepared data and teacher."""
    from confkd.config import _deep_merge, load_params
    from confkd.distill.trainer import distill
    from confkd.layout import DistillPaths, Layout

    params = load_params(ROOT / "params.yaml")
    raw = params.model_dump(by_alias=True)
    cfg = copy.deepcopy(raw["distill"]["configs"][base or name])
    raw["distill"]["configs"][name] = _deep_merge(cfg, overrides)
    from confkd.config import parse_params

    params = parse_params(raw)
    paths = DistillPaths.of(name, Layout(ROOT), root=scratch)
    t0 = time.perf_counter()
    metrics = distill(params, name, paths)
    metrics["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return metrics


def mean_std(runs: list[dict], keys) -> dict[str, float]:
    """``{<key>_mean, <key>_std}`` over repeated runs (population std, as numpy's default)."""
    import numpy as np

    return {f"{k}_{stat}": float(fn([r[k] for r in runs])) for k in keys
            for stat, fn in (("mean", np.mean), ("std", np.std))}


def write_results(stem: str, results: dict, markdown: list[str]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text("\n".join(markdown) + "\n")
    print("\n".join(markdown))
