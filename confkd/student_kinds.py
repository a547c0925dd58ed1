"""Student kinds (transformer, DAN): their names and the traits every layer may read. What differs per kind lives
in two more places, one per concern, so a DVC stage depends only on the code it uses: training in
:mod:`confkd.distill.kinds` (building the student and the adapter the trainer drives), serving in
:mod:`confkd.export.kinds` (recognising and loading a saved model, its ONNX export, runtimes and latency backend).
The trainer, :func:`confkd.inference.load_predictor` and the export stage look the kind up instead of branching
on it.

Adding a kind touches three files: its declaration here, its trainer in ``confkd/distill/kinds.py`` and its
server in ``confkd/export/kinds.py``. ``student.kind`` in params accepts every declared name (checked when params
are parsed). The teacher is served as the ``transformer`` kind.

This module imports nothing from confkd but its errors: the params schema reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from confkd.errors import ParamsError


@dataclass(frozen=True)
class StudentKind:
    name: str  # student.kind in params.yaml
    export_kind: str  # the "kind" in an ONNX export's manifest
    onnx_batch_size: int = 64  # default batch of the ONNX predictor


KINDS: dict[str, StudentKind] = {}


def register(kind: StudentKind) -> StudentKind:
    if not kind.name or not kind.export_kind:
        raise ValueError("a student kind needs a name and an export_kind")
    KINDS[kind.name] = kind
    return kind


def get(name: str) -> StudentKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ParamsError(f"unknown student kind '{name}' (available: {', '.join(KINDS)})") from None


def by_export_kind(export_kind: str) -> StudentKind:
    for kind in KINDS.values():
        if kind.export_kind == export_kind:
            return kind
    raise ParamsError(f"unknown export kind '{export_kind}' (available: "
                      f"{', '.join(k.export_kind for k in KINDS.values())})")


TRANSFORMER = register(StudentKind("transformer", "hf"))
DAN = register(StudentKind("dan", "dan", onnx_batch_size=256))
