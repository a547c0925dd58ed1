"""Data-parallel training under ``torchrun`` (DistributedDataParallel): gloo on CPU, NCCL on CUDA.

Launch any training stage with ``torchrun --nproc_per_node N stages/<stage>.py``. Every rank builds
the same batches (same seed); each global batch is split across ranks, so one optimiser step sees
the same examples as in a single-process run and the learning-rate schedule is unchanged. DDP
averages gradients, so all ranks hold identical weights; evaluation runs on every rank (the dev split
is small and the decisions it drives, best step and early stop, stay identical everywhere), and
only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import os
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE`` > 1); returns this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    log.info("rank %d of %d (%s backend) on %s", rank(), world_size(), backend, device)
    return device


def shard(batch, n_ranks: int | None = None, this_rank: int | None = None):
    """This rank's slice of a global batch of example indices (strided, so lengths stay balanced)."""
    n_ranks = world_size() if n_ranks is None else n_ranks
    this_rank = rank() if this_rank is None else this_rank
    if n_ranks == 1:
        return batch
    if len(batch) < n_ranks:  # every rank must step: a tiny last batch is repeated, not left empty
        i = this_rank % len(batch)
        return batch[i:i + 1]
    return batch[this_rank::n_ranks]


def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of every parameter's bytes: equal digests mean bit-identical weights."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def check_identical(model: torch.nn.Module) -> None:
    """Log this rank's weight digest and fail loudly if the ranks diverged (they never should under DDP)."""
    if world_size() == 1:
        return
    digest = weights_digest(model)
    log.info("rank %d of %d: weights sha256 %s", rank(), world_size(), digest)
    digests: list = [None] * world_size()
    dist.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"data-parallel ranks ended with different weights: {digests}")


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` wrapped in DDP when a process group is active, else unchanged."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
    # Some phases leave parameters unused (e.g. the classifier during intermediate-only distillation).
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block (e.g. writes outputs) while the others wait, then everyone goes on."""
    try:
        yield is_main()
    finally:
        barrier()
