"""Device selection, thread control, seeding and logging: one place so every stage behaves alike."""

from __future__ import annotations

import logging
import os
import random
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: stages that never touch a model start without it
    import torch

log = logging.getLogger(__name__)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def progress(iterable=None, **kwargs):
    """tqdm that stays readable in logs: when stderr is not a terminal (DVC, CI) it redraws rarely."""
    from tqdm.auto import tqdm

    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 30.0)
    return tqdm(iterable, **kwargs)


def set_deterministic_algorithms(mode: bool) -> None:
    """``torch.use_deterministic_algorithms(mode, warn_only=True)`` without its cost at start-up.

    torch's function also sets the TorchInductor flag, and importing ``torch._inductor.config`` for it
    takes seconds (the compiler stack), in every stage process. The kernels' switch is the C flag;
    the inductor flag only matters to ``torch.compile``, so it is set when inductor is already loaded
    (as torch's own call would) and left alone otherwise.
    """
    import torch

    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=True)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch (all devices); optionally ask torch for deterministic kernels."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        # Needed by cuBLAS for deterministic matmuls; harmless on CPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        set_deterministic_algorithms(True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True


def configure_threads(num_threads: int | None) -> int:
    """Pin intra-op threads deliberately (0/None = all cores). Returns the number in force."""
    import torch

    n = num_threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


@dataclass(frozen=True)
class Precision:
    """Autocast settings for the chosen device; ``dtype=None`` means full fp32."""

    device_type: str
    dtype: torch.dtype | None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def needs_grad_scaler(self) -> bool:
        import torch

        return self.dtype is torch.float16

    def autocast(self):
        import torch

        return torch.autocast(device_type=self.device_type, dtype=self.dtype, enabled=self.enabled)


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit name must be available."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from confkd.errors import ParamsError

        raise ParamsError(f"runtime.device: '{name}' requested but CUDA is not available on this machine")
    return device


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 matmuls natively here (AVX512-BF16 or AMX); elsewhere bf16 is emulated."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_precision(device: torch.device, mode: str = "auto") -> Precision:
    """Mixed precision only where it pays: bf16 on CUDA if supported, else fp16; never on CPU in auto.

    ``bf16`` on a CPU is honoured (a 6-layer MiniLM training step was 1.4x faster on a CPU with
    AVX512-BF16, benchmarks/bench_precision.py) but changes the numbers, so it is never chosen implicitly.
    """
    import torch

    if mode == "no" or (mode == "auto" and device.type != "cuda"):
        return Precision(device.type, None)
    if mode == "auto":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]
    if device.type == "cpu" and dtype is torch.bfloat16 and not cpu_has_native_bf16():
        log.warning("runtime.mixed_precision: bf16 on a CPU without native bf16 support is emulated and slower "
                    "than fp32; consider 'no'")
    return Precision(device.type, dtype)
