"""Parity of an exported folder with the PyTorch model it came from, on a labelled split.

Two checks gate an export: the fp32 graph (and the DAN's numpy runtime) must reproduce PyTorch's logits to ``export.max_abs_diff``
(it is the same function, so anything larger is an export bug), and the int8 graph must agree with
the fp32 graph's argmax on at least ``export.min_int8_agreement`` of the examples (quantisation is
lossy by design; agreement bounds how often it changes an answer). Accuracies of all three are
recorded for the report.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from confkd.errors import DataError, ValidationFailed

log = logging.getLogger(__name__)


class ExportCheckFailed(ValidationFailed):
    """An exported model failed a parity check (the metrics and report are written first)."""


def label_indices(model_labels: Sequence[str], split_labels: Sequence[str]) -> np.ndarray:
    """Position of each model output in the split's label list, so accuracy compares names, not positions.

    A model whose label names are not the data's (e.g. HF's generic ``LABEL_0``) but whose output count
    matches is compared by position, with a warning; otherwise accuracy is undefined (``DataError``).
    """
    model_labels, split_labels = list(model_labels), list(split_labels)
    if set(model_labels) <= set(split_labels):
        return np.array([split_labels.index(label) for label in model_labels])
    if len(model_labels) == len(split_labels):
        log.warning("model labels %s are not the data's %s: comparing by position", model_labels, split_labels)
        return np.arange(len(model_labels))
    raise DataError(f"model labels {model_labels} do not match the data's labels {split_labels}")


def accuracy(logits: np.ndarray, gold: np.ndarray, mapping: np.ndarray) -> float:
    return float(np.mean(mapping[np.asarray(logits).argmax(1)] == np.asarray(gold)))


# The same fp32 function as PyTorch, so held to export.max_abs_diff; names for messages.
EXACT_RUNTIMES = {"onnx_fp32": "ONNX fp32", "numpy_fp32": "numpy fp32 runtime"}


def parity_metrics(reference: np.ndarray, fp32: np.ndarray, int8: np.ndarray | None, gold: np.ndarray,
                   mapping: np.ndarray, exact: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Flat parity metrics keyed ``<backend>.<metric>`` (``torch``, ``onnx_fp32``, ``onnx_int8``, and each
    further fp32 runtime of ``exact``, e.g. ``{"numpy_fp32": logits}`` for the DAN's numpy runtime)."""
    if reference.shape != fp32.shape:
        raise DataError(f"ONNX fp32 logits have shape {fp32.shape}, PyTorch {reference.shape}")
    out = {
        "torch.accuracy": accuracy(reference, gold, mapping),
        "onnx_fp32.accuracy": accuracy(fp32, gold, mapping),
        "onnx_fp32.max_abs_diff": float(np.max(np.abs(fp32 - reference))) if len(reference) else 0.0,
    }
    if int8 is not None:
        out["onnx_int8.accuracy"] = accuracy(int8, gold, mapping)
        out["onnx_int8.agreement"] = float(np.mean(int8.argmax(1) == fp32.argmax(1)))
        out["onnx_int8.max_abs_diff"] = float(np.max(np.abs(int8 - reference))) if len(reference) else 0.0
        out["onnx_int8.mean_abs_diff"] = float(np.mean(np.abs(int8 - reference))) if len(reference) else 0.0
    for runtime, logits in (exact or {}).items():
        if runtime not in EXACT_RUNTIMES or logits.shape != reference.shape:
            raise DataError(f"{runtime} logits have shape {logits.shape}, PyTorch {reference.shape}")
        out[f"{runtime}.accuracy"] = accuracy(logits, gold, mapping)
        out[f"{runtime}.max_abs_diff"] = float(np.max(np.abs(logits - reference))) if len(reference) else 0.0
    return out


def parity_failures(name: str, metrics: dict[str, float], max_abs_diff: float, min_int8_agreement: float) -> list[str]:
    """Human-readable failed checks (empty when the export passes), each naming value and threshold."""
    failures = []
    for runtime, label in EXACT_RUNTIMES.items():
        diff = metrics.get(f"{runtime}.max_abs_diff")
        if diff is not None and not diff <= max_abs_diff:  # also catches NaN
            failures.append(f"{name}: {label} max |logit - PyTorch logit| = {diff:.3g} > "
                            f"export.max_abs_diff = {max_abs_diff:.3g}")
    agreement = metrics.get("onnx_int8.agreement")
    if agreement is not None and not agreement >= min_int8_agreement:
        failures.append(f"{name}: ONNX int8 argmax agreement with fp32 = {agreement:.4f} < "
                        f"export.min_int8_agreement = {min_int8_agreement:.4f}")
    return failures
