"""What differs per student kind in serving a saved model: recognising and loading it (a PyTorch predictor),
the text -> inputs step of its ONNX export, the ONNX graph itself, the runtimes that serve the export, runtimes
that must match PyTorch exactly, and the PyTorch latency backend. Keyed by the export kind of
:mod:`confkd.student_kinds`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from confkd import student_kinds
from confkd.errors import ParamsError


@dataclass
class ExportedFiles:
    files: dict[str, Any]  # manifest "files" entries besides the graphs
    max_length: int | None
    keep_fp32: list[str] = field(default_factory=list)  # nodes int8 quantisation leaves in fp32
    calibration: list | None = None  # encoded batches for activation smoothing before int8


class KindServer:
    def is_saved(self, path: Path) -> bool:
        """Whether ``path`` (a folder with ``config.json``) holds a saved model of this kind."""
        raise NotImplementedError

    def load_predictor(self, path: Path, device: str | None, max_length: int | None):
        raise NotImplementedError

    def onnx_encoder(self, folder: Path, manifest: dict, max_length: int | None):
        """The text -> graph inputs step saved beside an exported graph."""
        raise NotImplementedError

    def write_onnx(self, predictor, source: Path, out: Path, ep, calibration_texts: list[str] | None) -> ExportedFiles:
        raise NotImplementedError

    def runtimes(self, quantize: bool) -> list[str]:
        return ["onnx_fp32"] + (["onnx_int8"] if quantize else [])

    def exact_runtimes(self, folder: Path, texts: list[str]) -> dict[str, np.ndarray] | None:
        """Logits of runtimes that must match PyTorch exactly (parity), beyond the ONNX graphs."""
        return None

    def torch_backend(self, predictor, max_length: int) -> Callable:
        raise NotImplementedError


class HFServer(KindServer):
    def is_saved(self, path):
        return (path / "config.json").is_file()

    def load_predictor(self, path, device, max_length):
        from confkd.predictors import HFPredictor

        return HFPredictor(path, device=device, max_length=max_length or 128)

    def onnx_encoder(self, folder, manifest, max_length):
        from confkd.export.encoders import HFTextEncoder

        return HFTextEncoder.from_dir(folder, max_length or manifest.get("max_length") or 128)


    def write_onnx(self, predictor, source, out, ep, calibration_texts) -> ExportedFiles:
        import onnx

        from confkd.export.convert import export_hf_onnx, ffn_down_projections
        from confkd.export.encoders import HFTextEncoder
        from confkd.export.manifest import FP32_FILE

        encoder = HFTextEncoder(predictor.tokenizer, ep.max_length)
        export_hf_onnx(predictor.model, encoder, out / FP32_FILE, ep.opset)
        tokenizer = sorted(Path(p).name for p in predictor.tokenizer.save_pretrained(str(out)))
        keep_fp32 = ffn_down_projections(onnx.load(str(out / FP32_FILE), load_external_data=False))
        calibration = ([encoder(calibration_texts[i:i + 32]) for i in range(0, len(calibration_texts), 32)]
                       if calibration_texts else None)
        return ExportedFiles({"tokenizer": tokenizer}, ep.max_length, keep_fp32, calibration)

    def torch_backend(self, predictor, max_length):
        from confkd.export import latency as lat
        from confkd.export.encoders import HFTextEncoder

        return lat.torch_hf_backend(predictor.model, HFTextEncoder(predictor.tokenizer, max_length))


class DANServer(KindServer):
    """The sparse n-gram DAN: its config.json carries a format marker."""

    def is_saved(self, path):
        from confkd.models.dan import MODEL_FORMAT

        config = path / "config.json"
        try:
            return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("format") == MODEL_FORMAT
        except json.JSONDecodeError:
            return False

    def load_predictor(self, path, device, max_length):
        from confkd.predictors import DANPredictor

        return DANPredictor(path, device=device)

    def onnx_encoder(self, folder, manifest, max_length):
        from confkd.export.encoders import DANTextEncoder
        from confkd.export.manifest import FEATURIZER_FILE

        return DANTextEncoder.from_file(Path(folder) / manifest["files"].get("featurizer", FEATURIZER_FILE))


    def write_onnx(self, predictor, source, out, ep, calibration_texts) -> ExportedFiles:
        import shutil

        from confkd.export.convert import export_dan_onnx
        from confkd.export.encoders import DANTextEncoder
        from confkd.export.manifest import FEATURIZER_FILE, FP32_FILE

        export_dan_onnx(predictor.student, DANTextEncoder(predictor.student.featurizer), out / FP32_FILE, ep.opset)
        shutil.copyfile(source / FEATURIZER_FILE, out / FEATURIZER_FILE)  # the saved plain-JSON featurizer, as is
        return ExportedFiles({"featurizer": FEATURIZER_FILE}, None)

    def runtimes(self, quantize):
        return super().runtimes(quantize) + ["numpy_fp32"]  # the export's plain numpy path (no ONNX Runtime)

    def exact_runtimes(self, folder, texts):
        from confkd.export.dan_runtime import NumpyDANPredictor

        return {"numpy_fp32": NumpyDANPredictor(folder).predict_logits(texts)}

    def torch_backend(self, predictor, max_length):
        from confkd.export import latency as lat

        return lat.torch_dan_backend(predictor.student)


# Asked in this order by server_of_saved: the DAN's config.json has a format marker, any HF folder a config.json.
SERVERS: dict[str, KindServer] = {student_kinds.DAN.export_kind: DANServer(),
                                  student_kinds.TRANSFORMER.export_kind: HFServer()}


def server_of(export_kind: str) -> KindServer:
    try:
        return SERVERS[export_kind]
    except KeyError:
        raise ParamsError(f"export kind '{export_kind}' has no server (known: {', '.join(SERVERS)})") from None


def server_of_saved(path: Path) -> tuple[student_kinds.StudentKind, KindServer]:
    """The kind of the model saved in ``path`` and its server: the first that recognises it, else a transformer."""
    for export_kind, server in SERVERS.items():
        if server.is_saved(Path(path)):
            return student_kinds.by_export_kind(export_kind), server
    return student_kinds.TRANSFORMER, SERVERS[student_kinds.TRANSFORMER.export_kind]
