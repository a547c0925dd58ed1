"""Atomic file output: a failed or interrupted write never replaces an earlier good result."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from confkd.errors import ModelNotFound


def fingerprint(*parts: str | bytes | os.PathLike) -> str:
    """SHA-256 (hex) of ``parts`` in order: strings and bytes as given, paths by their WHOLE content (a
    folder: every file under it, sorted by relative path, names included). The one content hash behind
    resumable checkpoints and labelling shards: a changed input means a different fingerprint."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (bytes, bytearray)):
            h.update(b"b" + bytes(part))
        elif isinstance(part, str):
            h.update(b"s" + part.encode())
        else:
            path = Path(part)
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for f in files:
                h.update(b"f" + f.relative_to(path).as_posix().encode() if path.is_dir() else b"f")
                with open(f, "rb") as fh:
                    for block in iter(lambda: fh.read(1 << 20), b""):
                        h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def provenance(prepared_dir: str | os.PathLike) -> dict[str, str]:
    """``{"task": ..., "data_fingerprint": ...}`` of the prepared data in ``prepared_dir`` (written by the
    prepare stage into its ``labels.json``): stamped into every metrics file, so results computed on other
    data are recognised as such. Empty when the folder predates the stamp or does not exist."""
    path = Path(prepared_dir) / "labels.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: meta[k] for k in ("task", "data_fingerprint") if k in meta}


def _umask_mode(directory: bool) -> int:
    """Permissions a plain open()/mkdir() would give (mkstemp/mkdtemp use 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success move it over ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, _umask_mode(directory=False))
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces ``path`` (old copy removed last)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(directory=True))
        backup = None
        if path.exists():
            backup = path.with_name(f".{path.name}.old")
            if backup.exists():
                shutil.rmtree(backup)
            os.replace(path, backup)
        os.replace(tmp, path)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", encoding="utf-8")


def read_model_json(path: str | os.PathLike, what: str, *, fmt: str | None = None,
                    version: int | None = None) -> Any:
    """Parse a model folder's JSON file (config, manifest, featurizer); any problem is ``ModelNotFound``.

    With ``fmt`` the file must be an object whose ``format`` is ``fmt`` (called ``what`` in the error)
    and whose ``version`` is ``version``, so a folder of another kind or release is refused by name.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelNotFound(f"'{path}' is unreadable or not valid JSON: {err}") from None
    if fmt is not None:
        if not isinstance(data, dict) or data.get("format") != fmt:
            raise ModelNotFound(f"'{path}' is not {what} (format must be {fmt!r})")
        if data.get("version") != version:
            raise ModelNotFound(f"'{path}': unsupported version {data.get('version')!r} (this code reads {version})")
    return data


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_jsonl(path: str | os.PathLike, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_json(tmp, orient="records", lines=True, force_ascii=False)


def read_jsonl(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        from confkd.errors import DataError

        raise DataError(f"{path}: file not found (run the stage that produces it first)")
    return pd.read_json(path, orient="records", lines=True, dtype={"id": str, "text": str})


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
