"""The ``export.json`` manifest of an exported model folder: what the folder holds and how to feed it.

A folder written by the export stage is self-describing, so ``confkd.inference.load_predictor`` can
recognise it and rebuild the text -> inputs step without the PyTorch source folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from confkd.errors import ModelNotFound
from confkd.io import read_model_json, write_json

EXPORT_FORMAT = "confkd-onnx-export"
EXPORT_VERSION = 1
MANIFEST_FILE = "export.json"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
FEATURIZER_FILE = "featurizer.json"

KINDS = ("hf", "dan")
PRECISIONS = ("fp32", "int8")
# Graph inputs per model kind (the output is always a single ``logits`` tensor [batch, num_labels]).
INPUT_NAMES = {"hf": ["input_ids", "attention_mask"], "dan": ["ngram_ids", "ngram_mask"]}
OUTPUT_NAME = "logits"


def build_manifest(*, kind: str, name: str, source: str, labels: list[str], max_length: int | None,
                   opset: int, files: dict[str, Any], quantization: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest dictionary; ``files`` maps roles (``fp32``, ``int8``, ``tokenizer``, ``featurizer``) to names."""
    if kind not in KINDS:
        raise ValueError(f"unknown export kind {kind!r} (expected one of {KINDS})")
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "kind": kind,
        "model": name,
        "source": source,
        "labels": list(labels),
        "max_length": max_length,
        "inputs": list(INPUT_NAMES[kind]),
        "output": OUTPUT_NAME,
        "opset": opset,
        "files": files,
        "quantization": quantization,
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    path = Path(directory) / MANIFEST_FILE
    write_json(path, manifest)
    return path


def is_export_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder with an export manifest (checked before HF / DAN folders)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Load and check ``export.json``; every problem is a ``ModelNotFound`` naming the file."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise ModelNotFound(f"exported model folder '{directory}' does not exist (run the export stage)")
    if not path.is_file():
        raise ModelNotFound(f"'{directory}' has no {MANIFEST_FILE} (not an exported model folder)")
    manifest = read_model_json(path, "an export manifest", fmt=EXPORT_FORMAT, version=EXPORT_VERSION)
    for key in ("kind", "labels", "inputs", "files"):
        if key not in manifest:
            raise ModelNotFound(f"'{path}' lacks the key '{key}'")
    if manifest["kind"] not in KINDS:
        raise ModelNotFound(f"'{path}': unknown kind {manifest['kind']!r} (expected one of {KINDS})")
    labels = manifest["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelNotFound(f"'{path}': labels must be a non-empty list of strings")
    if not isinstance(manifest["files"], dict) or "fp32" not in manifest["files"]:
        raise ModelNotFound(f"'{path}': files must name at least the fp32 model")
    return manifest
