"""Teacher labelling of large transfer sets: sharded, resumable, and parallel under ``torchrun``.

The sparse-distillation recipe labels millions of unlabeled sentences with the teacher. Texts are
cut into fixed shards; each finished shard is written atomically to a work folder together with a
fingerprint of (texts, teacher, settings), so an interrupted run re-labels only the missing shards.
Under ``torchrun --nproc_per_node N`` rank r labels shards r, r+N, ...; rank 0 gathers them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from confkd import distributed
from confkd.io import atomic_path, fingerprint, write_json

log = logging.getLogger(__name__)


def label_in_shards(texts: list[str], predict: Callable[[list[str]], np.ndarray], work_dir: Path, key: str,
                    shard_size: int = 20000, keep: bool = False) -> np.ndarray | None:
    """Logits for ``texts`` (``predict`` maps a list of texts to ``[n, K]`` logits), shard by shard.

    ``key`` identifies the teacher and settings; together with the texts it decides whether shards
    already in ``work_dir`` can be reused. Returns the logits on rank 0 (``None`` on other ranks);
    the work folder is removed afterwards unless ``keep``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    fp = fingerprint(key, str(shard_size), *texts)
    manifest = work_dir / "manifest.json"
    if distributed.is_main():
        if manifest.exists() and json.loads(manifest.read_text()).get("fingerprint") != fp:
            log.info("labelling work folder %s belongs to other texts or another teacher: starting afresh", work_dir)
            shutil.rmtree(work_dir)
        if not manifest.exists():
            write_json(manifest, {"fingerprint": fp, "n_texts": len(texts), "shard_size": shard_size})
    distributed.barrier()

    n_shards = (len(texts) + shard_size - 1) // shard_size
    mine = [i for i in range(n_shards) if i % distributed.world_size() == distributed.rank()]
    done = 0
    for i in mine:
        path = work_dir / f"shard-{i:05d}.npy"
        if path.exists():
            done += 1
            continue
        logits = predict(texts[i * shard_size:(i + 1) * shard_size]).astype(np.float32)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, logits)
        log.info("labelled shard %d/%d (%d texts)", i + 1, n_shards, len(logits))
    if done:
        log.info("reused %d already-labelled shard(s) from %s", done, work_dir)
    distributed.barrier()
    if not distributed.is_main():
        return None
    parts = [np.load(work_dir / f"shard-{i:05d}.npy") for i in range(n_shards)]
    out = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    if len(out) != len(texts):
        raise RuntimeError(f"labelling produced {len(out)} rows for {len(texts)} texts (corrupted {work_dir}?)")
    if not keep:
        shutil.rmtree(work_dir, ignore_errors=True)
    return out
