"""Data-parallel training under torchrun: 2 CPU processes (gloo) end with identical weights."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from confkd.distributed import shard

from .conftest import REPO_ROOT, tiny_params

pytestmark = pytest.mark.integration


def test_shard_splits_a_global_batch_across_ranks():
    batch = list(range(7))
    parts = [shard(batch, 2, r) for r in range(2)]
    assert parts == [[0, 2, 4, 6], [1, 3, 5]]
    assert shard(batch, 1, 0) == batch
    assert shard([5], 2, 1) == [5]  # a batch smaller than the world: every rank still gets an example


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "confkd.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _checksums(log: str) -> dict[int, str]:
    found = re.findall(r"rank (\d+) of 2: weights sha256 ([0-9a-f]{16})", log)
    return {int(r): h for r, h in found}


def test_teacher_and_distillation_under_torchrun_keep_ranks_identical(trained_teacher, tiny_model_dir, tmp_path):
    root = tmp_path
    (root / "data").mkdir()
    (root / "data" / "prepared").symlink_to(trained_teacher / "data" / "prepared", target_is_directory=True)
    params = tiny_params(tiny_model_dir, {"kd": {"method": "kd_logits", "temperature": 2.0}},
                         defaults={"max_steps": 6, "eval_every_steps": 3},
                         augment={"size": 40, "shard_size": 10, "batch_size": 8})
    (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(by_alias=True, mode="json"), sort_keys=False))

    log = _torchrun(["teacher"], root)
    sums = _checksums(log)
    assert set(sums) == {0, 1} and sums[0] == sums[1], log[-3000:]
    assert (root / "models" / "teacher" / "config.json").exists()  # written once, by rank 0
    assert sorted(p.name for p in (root / "artifacts" / "teacher" / "logits").iterdir()) == [
        "dev.npz", "test.npz", "train.npz", "transfer.npz"]

    # Teacher labelling of a transfer set: shards split across the ranks, gathered by rank 0.
    _torchrun(["augment"], root)
    from confkd.training.teacher import load_logits

    assert load_logits(root / "artifacts" / "augment" / "logits.npz").shape == (40, 2)
    assert not (root / "checkpoints" / "augment").exists()

    log = _torchrun(["distill", "--config", "kd"], root)
    sums = _checksums(log)
    assert set(sums) == {0, 1} and sums[0] == sums[1], log[-3000:]
    assert (root / "metrics" / "distill" / "kd.json").exists()
