"""Peak resident memory of a process that serves one exported model.

Measured in a fresh child process (``python -m confkd.export.memory``) so that one model's buffers,
allocator caches and runtime libraries do not count against another: the child loads the exported
folder with the named runtime, predicts the given batch twice, and reports its peak resident set
size (``VmHWM`` on Linux). The figure therefore includes the Python interpreter and the runtime's own
libraries (ONNX Runtime, or numpy and numba for the DAN's numpy runtime) -- what a deployed process needs.
The child also names the kernel that served (:func:`serving_kernel`); given the kernel the timing used, the
probe refuses a figure measured on another one (e.g. the numpy look-up where numba failed to load in the child).

    probe_memory("models/export/sparse_dan", "numpy_fp32", texts, num_threads=2, expect_kernel="numba")
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from confkd.errors import ConfkdError, ParamsError

RUNTIMES = ("onnx_fp32", "onnx_int8", "numpy_fp32", "numpy_fp32_uncompiled")


def load_runtime(folder: str | Path, runtime: str, num_threads: int):
    """The predictor of an exported folder in one of :data:`RUNTIMES`."""
    if runtime in ("numpy_fp32", "numpy_fp32_uncompiled"):  # the DAN's runtime; the compiled kernel where numba loads
        from confkd.export.dan_runtime import NumpyDANPredictor

        return NumpyDANPredictor(folder, compiled=False if runtime.endswith("_uncompiled") else None)
    if runtime in ("onnx_fp32", "onnx_int8"):
        from confkd.export.predictor import OnnxPredictor

        return OnnxPredictor(folder, precision=runtime.split("_")[1], num_threads=num_threads)
    raise ParamsError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")


def serving_kernel(served) -> str:
    """What computes in a loaded runtime: the DAN numpy runtime's bag kernel (``"numba"`` or ``"numpy"``), an
    ONNX Runtime session's first execution provider (e.g. ``"CPUExecutionProvider"``). ``served`` is a
    predictor or a backend made from one (its bound ``predict_proba``)."""
    predictor = getattr(served, "__self__", served)
    if (kernel := getattr(predictor, "kernel", None)) is not None:
        return str(kernel)
    if (session := getattr(predictor, "session", None)) is not None:
        return session.get_providers()[0]
    return type(predictor).__name__


@dataclass(frozen=True)
class MemoryProbe:
    """One probe: the child's peak resident memory (MiB) and the kernel that served in it."""

    peak_rss_mb: float
    kernel: str


def probe_memory(folder: str | Path, runtime: str, texts: Sequence[str], num_threads: int,
                 expect_kernel: str | None = None, timeout: float = 600) -> MemoryProbe:
    """Peak resident memory of a child process that loads ``folder`` and predicts ``texts`` twice, and the kernel
    that served there. ``expect_kernel`` (the one that was timed): a different kernel in the child is an error."""
    if runtime not in RUNTIMES:
        raise ParamsError(f"unknown runtime {runtime!r}; expected one of {RUNTIMES}")
    proc = subprocess.run([sys.executable, "-m", "confkd.export.memory", str(folder), runtime, str(int(num_threads))],
                          input=json.dumps(list(texts)), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})  # as the stage times the numpy runtime
    if proc.returncode != 0:
        raise ConfkdError(f"memory probe of '{folder}' ({runtime}) failed: {proc.stderr.strip()[-500:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    probe = MemoryProbe(float(out["peak_rss_mb"]), out["kernel"])
    if expect_kernel is not None and probe.kernel != expect_kernel:
        raise ConfkdError(f"memory probe of '{folder}' ({runtime}) served with the {probe.kernel!r} kernel, but the "
                          f"timing used {expect_kernel!r}: its memory figure would describe another runtime")
    return probe


def _main(argv: list[str]) -> None:
    folder, runtime, threads = argv
    texts = json.loads(sys.stdin.read())
    predictor = load_runtime(folder, runtime, int(threads))
    predictor.predict_proba(texts)
    predictor.predict_proba(texts)
    print(json.dumps({"peak_rss_mb": peak_rss_of_this_process(), "kernel": serving_kernel(predictor)}))


def peak_rss_of_this_process() -> float:
    """Peak resident memory (MiB) of this process's own address space.

    Linux: ``VmHWM`` from ``/proc/self/status``. Not ``ru_maxrss``: Linux carries it across ``execve``, so a
    child started from a large parent would report the parent's size at fork time.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


if __name__ == "__main__":
    _main(sys.argv[1:])
