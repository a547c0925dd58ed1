"""The PyTorch predictors of saved models (an HF classifier folder, a saved DAN student) and the interface every
predictor shares, the ONNX Runtime ones of :mod:`confkd.export.predictor` included. Use
:func:`confkd.inference.load_predictor` to get the right one for a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from confkd.errors import DataError
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
