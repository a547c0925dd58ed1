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

from confkd.errors import ModelNotFound
from confkd.predictors import DANPredictor, HFPredictor, Predictor

__all__ = ["DANPredictor", "HFPredictor", "Predictor", "load_predictor"]


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
