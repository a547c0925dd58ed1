"""Load a saved model (teacher, transformer student or sparse DAN) and predict from raw text.

    from confkd.inference import load_predictor
    predictor = load_predictor("models/distill/sparse_dan")
    probs = predictor.predict_proba(["a gorgeous, witty film", "a dull mess"])   # [2, num_labels]

A folder written by the export stage (``models/export/<name>``, recognised by its ``export.json``)
gives an ONNX Runtime predictor with the same interface; see :mod:`confkd.export.predictor` for its
``precision`` (``auto`` = int8 when exported, else fp32) and ``num_threads`` options.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from confkd.errors import DataError, ModelNotFound
from confkd.evaluation.metrics import probabilities


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise DataError("texts must be a list of strings, not a single string")
    try:
        texts = list(texts)
    except TypeError:
        raise DataError(f"texts must be a list of strings, not {type(texts).__name__}") from None
    if not texts:
        raise DataError("texts is empty: give at least one text")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"texts must be strings; items {bad[:5]} are {type(texts[bad[0]]).__name__}")
    return texts


class Predictor:
    """Common interface: ``labels``, ``predict_logits(texts)``, ``predict_proba(texts)``, ``predict(texts)``."""

    labels: list[str]

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return probabilities(self.predict_logits(texts)).astype(np.float32)

    def predict(self, texts: Sequence[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(1)]


class HFPredictor(Predictor):
    def __init__(self, path: Path, device: str = "cpu", max_length: int = 128, batch_size: int = 64):
        from confkd.models.hf import load_saved_classifier

        model, self.tokenizer = load_saved_classifier(path)
        self.model = model.to(device).eval()
        cfg = self.model.config
        self.labels = [cfg.id2label[i] for i in range(cfg.num_labels)]
        self.device, self.max_length, self.batch_size = device, max_length, batch_size

    def predict_logits(self, texts):
        from confkd.training.inference import predict_logits

        texts = _check_texts(texts)
        return predict_logits(self.model, self.tokenizer, texts, max_length=self.max_length,
                              batch_size=self.batch_size, device=self.device, desc="predict")


class DANPredictor(Predictor):
    def __init__(self, path: Path, device: str = "cpu", batch_size: int = 256):
        from confkd.models.dan import DANStudent

        self.student = DANStudent.from_pretrained(path, device=device)
        self.labels = list(self.student.labels)
        self.batch_size = batch_size

    def predict_logits(self, texts):
        return self.student.predict_logits(_check_texts(texts), batch_size=self.batch_size)


def load_predictor(path: str | Path, device: str = "cpu", max_length: int | None = None,
                   precision: str = "auto", num_threads: int | None = None) -> Predictor:
    """A predictor for a saved HF classifier folder, a saved DAN student folder or an exported folder.

    ``max_length`` defaults to 128 for saved HF folders and to the export's own setting for exported
    ones. ``precision`` and ``num_threads`` (ONNX Runtime intra-op threads; None = all cores) apply
    to exported folders only; PyTorch threads are the process-wide ``torch.set_num_threads``.
    """
    from confkd.export.manifest import MANIFEST_FILE, is_export_dir

    path = Path(path)
    if is_export_dir(path):
        from confkd.export.predictor import OnnxPredictor

        return OnnxPredictor(path, precision=precision, num_threads=num_threads, max_length=max_length)
    config = path / "config.json"
    if not config.exists():
        if path.is_file():
            raise ModelNotFound(f"{path}: is a file; expected a model folder (config.json missing)")
        if not path.is_dir():
            raise ModelNotFound(f"{path}: no model here (the folder does not exist; config.json missing)")
        raise ModelNotFound(f"{path}: no model here (config.json missing, and no {MANIFEST_FILE} of an ONNX export)")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelNotFound(f"{config}: corrupted ({err})") from None
    from confkd.export.kinds import server_of_saved

    return server_of_saved(path)[1].load_predictor(path, device, max_length)
