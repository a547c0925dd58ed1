"""Run the DVC pipeline one stage at a time, for an orchestrator (the Prefect flow in ``flows/``).

DVC stays the source of truth: the stage order comes from DVC's own graph, and every stage is
reproduced by DVC (``Repo.reproduce(target, single_item=True)``), so its cache, run cache and
``dvc.lock`` decide what reruns. This module holds the orchestrator-independent half:

- :func:`plan_stages`: the stages to run, in DVC's order, with the metrics files each declares;
- :func:`apply_params_overrides`: validated, comment-preserving edits of ``params.yaml``;
- :func:`reproduce_stage`: one stage in a child process, its output streamed line by line,
  with a structured result (ran, restored from the run cache, skipped as unchanged, or failed
  with the stage's own error message);
- :func:`read_metrics`: a metrics file as a flat mapping.

Each stage runs in a child process (``python -m confkd.orchestration``) because DVC runs the
stage command with inherited stdout/stderr: only a separate process lets the orchestrator
capture that output as it appears, and it keeps DVC's global state (logging, repo lock) out of
the orchestrator's process. This module does not import Prefect, so the child starts quickly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from confkd.errors import ConfkdError, ParamsError

log = logging.getLogger(__name__)

# Offline-safe defaults, applied without overriding what the user set. The Prefect ones must be
# in the environment before prefect is imported (its settings are read at import time).
OFFLINE_ENV_DEFAULTS = {
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # The ephemeral server's default start-up timeout (20 s) is too short on a busy small machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
}

PARAMS_FILE = "params.yaml"
FOREACH_SEPARATOR = "@"  # DVC names foreach entries "<group>@<key>"

RAN, RESTORED, SKIPPED, FAILED = "ran", "restored", "skipped", "failed"
UNTRACKED = "ran outside DVC"  # a subset report: its outputs are not recorded in dvc.lock

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# confkd stages log "HH:MM:SS LEVEL logger: message" (confkd.runtime.setup_logging).
_LOG_RECORD = re.compile(r"^\d{2}:\d{2}:\d{2} [A-Z]+ \S+: ")
_ERROR_RECORD = re.compile(r"^\d{2}:\d{2}:\d{2} (?:ERROR|CRITICAL) (?P<logger>\S+): (?P<message>.*)$")
_DVC_LINE = re.compile(r"^(Running stage |> |Stage '|Updating lock file|Use `dvc push`|ERROR: |WARNING: )")
_MAX_ERROR_LINES = 25


def apply_offline_env_defaults() -> None:
    """Set :data:`OFFLINE_ENV_DEFAULTS` where the environment does not already choose a value."""
    for key, value in OFFLINE_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


class StageFailed(ConfkdError):
    """A DVC stage failed. ``permanent`` marks failures a retry cannot fix (bad params or data,
    a broken dvc.yaml), so an orchestrator retries only the others."""

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class PlannedStage:
    """One DVC stage to run: its target name and the metrics files it declares."""

    name: str
    metrics: tuple[str, ...] = ()
    upstream: tuple[str, ...] = ()


@dataclass
class StageResult:
    """What happened to one stage, as DVC reported it."""

    name: str
    status: str
    seconds: float
    error: str | None = None
    permanent: bool = False
    output_tail: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "output_tail"}


# --------------------------------------------------------------------------------------- planning


def find_repo_root(repo_dir: str | os.PathLike | None = None) -> Path:
    """The DVC repository containing ``repo_dir`` (default: the working directory)."""
    start = Path(repo_dir or os.getcwd()).resolve()
    for candidate in (start, *start.parents):
        if (candidate / ".dvc").is_dir():
            return candidate
    raise ConfkdError(f"{start}: not inside a DVC repository (no .dvc folder found)")


def _stage_name(stage, root: Path) -> str:
    """The target name DVC accepts for ``stage`` from the repository root ("teacher",
    "distill@kd_logits", or "sub/dvc.yaml:name" for stages defined in a sub-folder)."""
    rel = Path(os.path.relpath(stage.path, root)).as_posix()
    if getattr(stage, "name", None) is None:  # a .dvc file, not a pipeline stage
        return rel
    return stage.name if rel == "dvc.yaml" else f"{rel}:{stage.name}"


def _expand_targets(targets: Iterable[str], names: list[str]) -> list[str]:
    """Exact stage names, or a foreach group name ("evaluate") standing for all its entries and for the
    stages named after it ("evaluate_teacher", "evaluate_tuned")."""
    selected = []
    groups = {n.split(FOREACH_SEPARATOR, 1)[0] for n in names if FOREACH_SEPARATOR in n}
    for target in targets:
        matches = [n for n in names if n == target or n.split(FOREACH_SEPARATOR, 1)[0] == target
                   or (target in groups and n.startswith(target + "_"))]
        if not matches:
            raise ConfkdError(f"unknown stage {target!r}; stages in dvc.yaml: {', '.join(names)}")
        selected += [m for m in matches if m not in selected]
    return selected


def _check_configs(configs: Iterable[str], names: list[str]) -> set[str]:
    keys = {n.split(FOREACH_SEPARATOR, 1)[1] for n in names if FOREACH_SEPARATOR in n}
    unknown = sorted(set(configs) - keys)
    if unknown:
        raise ConfkdError(f"unknown configuration(s) {', '.join(unknown)}; known: {', '.join(sorted(keys))}")
    return set(configs)


CONFIG_PARAM = "distill.configs."  # a stage whose params name a configuration works on that configuration


def _configs_of(stage, name: str) -> set[str]:
    """The distillation configurations a stage works on: its foreach key, and every ``distill.configs.<name>``
    among its params (the tune stage's base configuration, for instance)."""
    from dvc.dependency.param import ParamsDependency

    found = {name.split(FOREACH_SEPARATOR, 1)[1]} if FOREACH_SEPARATOR in name else set()
    for dep in stage.deps:
        if isinstance(dep, ParamsDependency):
            keys = dep.params if isinstance(dep.params, list) else list(dep.params or ())
            found |= {k[len(CONFIG_PARAM):].split(".", 1)[0] for k in keys if k.startswith(CONFIG_PARAM)}
    return found


def plan_stages(repo_dir: str | os.PathLike | None = None, targets: Iterable[str] | None = None,
                configs: Iterable[str] | None = None, always: Iterable[str] = (),
                left_out: list[str] | None = None) -> list[PlannedStage]:
    """The stages ``dvc repro <targets>`` would visit, in DVC's own order.

    ``targets`` are stage names or foreach group names (default: every stage); their upstream
    stages are included, as with ``dvc repro``. ``configs`` limits the run to these distillation
    configurations: a stage that works on another one (a foreach entry such as ``distill@kd_logits``,
    or a stage whose params name ``distill.configs.<other>``, like ``tune`` on its base) is left out,
    and so is every stage downstream of a left-out one (``distill_tuned`` after ``tune``; ``export``,
    which reads every student), except the stages in ``always`` (the report, which then covers the
    subset). The names left out are appended to ``left_out``. Order and dependencies come from DVC's
    graph (``Repo.index.graph`` and DVC's ``plan_repro``), never from a hand-written list.
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.reproduce import get_active_graph, plan_repro

    root = find_repo_root(repo_dir)
    always = set(always)
    dropped: list[str] = []
    try:
        with Repo(str(root)) as repo:
            graph = get_active_graph(repo.index.graph)
            by_name = {_stage_name(stage, root): stage for stage in graph.nodes}
            names = list(by_name)
            wanted = [by_name[n] for n in _expand_targets(targets, names)] if targets else None
            keep = _check_configs(configs, names) if configs is not None else None
            plan = []
            for stage in plan_repro(graph, wanted):
                name = _stage_name(stage, root)
                if keep is not None and name not in always and (
                        _configs_of(stage, name) - keep
                        or any(_stage_name(dep, root) in dropped for dep in graph.successors(stage))):
                    dropped.append(name)
                    continue
                metrics = tuple(Path(os.path.relpath(out.fs_path, root)).as_posix() for out in stage.outs if out.metric)
                upstream = tuple(_stage_name(dep, root) for dep in graph.successors(stage))
                plan.append(PlannedStage(name, metrics, upstream))
    except DvcException as err:
        raise ConfkdError(f"{root}: DVC could not load the pipeline: {err}") from err
    if left_out is not None:
        left_out.extend(dropped)
    planned = {p.name for p in plan}
    return [PlannedStage(p.name, p.metrics, tuple(u for u in p.upstream if u in planned)) for p in plan]


# --------------------------------------------------------------------------------------- params


def _set_dotted(data: dict, key: str, value: Any) -> Any:
    """Set ``a.b.c`` in nested mappings; returns the previous value (None if absent)."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ParamsError(f"{key}: {part!r} is not a mapping in {PARAMS_FILE}")
        node = child
    previous = node.get(leaf)
    node[leaf] = value
    return previous


def apply_params_overrides(repo_dir: str | os.PathLike, overrides: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Write ``{"dotted.key": value}`` into the repository's params.yaml, like ``dvc exp run -S``
    but in the workspace, so the following ``dvc repro`` (and dvc.lock) sees them.

    The result is validated against confkd's params schema before anything is written: a typo or
    wrong type fails here, naming the key, and leaves params.yaml untouched. The file is edited
    with DVC's YAML round-tripper, which keeps comments and key order. Returns the changed keys
    as ``{key: (old, new)}``.
    """
    import copy

    import yaml
    from dvc.utils.serialize import modify_yaml

    from confkd.config import parse_params

    path = find_repo_root(repo_dir) / PARAMS_FILE
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    current = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    proposed = copy.deepcopy(current)
    changes = {}
    for key, value in overrides.items():
        old = _set_dotted(proposed, key, value)
        if old != value:
            changes[key] = (old, value)
    parse_params(proposed, f"{path} with overrides")
    if changes:
        with modify_yaml(str(path)) as data:
            for key, (_, value) in changes.items():
                _set_dotted(data, key, value)
    return changes


def applicable_overrides(params: Mapping[str, Any], overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split ``-S`` overrides into those that apply to ``params`` (a parsed params.yaml) and removals (``~key``)
    of keys it does not have. A profile written for one revision (the quick profile's removal of a configuration
    a pull request adds, say) then runs on another, where that configuration simply is not there."""
    kept, skipped = [], []
    for override in overrides:
        if override.startswith("~"):
            node: Any = params
            for part in override[1:].partition("=")[0].split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            if node is None:
                skipped.append(override)
                continue
        kept.append(override)
    return kept, skipped


def apply_hydra_overrides(repo_dir: str | os.PathLike, overrides: list[str]) -> None:
    """Apply ``dvc exp run -S`` overrides (Hydra's grammar: ``key=value``, ``++key=value``, ``~key`` to remove)
    to the repository's params.yaml with DVC's own implementation, validated by confkd's schema first: a bad
    override fails naming the key and leaves params.yaml untouched."""
    import shutil

    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    from confkd.config import load_params

    path = find_repo_root(repo_dir) / PARAMS_FILE
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        trial = Path(tmp) / PARAMS_FILE
        shutil.copyfile(path, trial)
        try:
            apply_overrides(str(trial), list(overrides))
        except InvalidArgumentError as exc:
            raise ParamsError(f"{path}: overrides {list(overrides)}: {exc.__cause__ or exc}") from exc
        load_params(trial)
        os.replace(trial, path)


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``teacher.max_steps=10``, ``evaluate.splits=[test]``)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"override {text!r}: expected KEY=VALUE")
    return key.strip(), yaml.safe_load(raw)


# --------------------------------------------------------------------------------------- running


def clean_line(line: str) -> str:
    """A line of stage output without colour codes and trailing whitespace."""
    return _ANSI.sub("", line).rstrip()


def error_excerpt(lines: list[str]) -> tuple[str, bool]:
    """The stage's own error message from its output, and whether it is a confkd error.

    confkd stages log user-facing errors (bad params, bad data, failed validation) as an ERROR
    record, possibly followed by indented detail lines; those are deterministic, so they are
    flagged for "do not retry". Otherwise the last line of a Python traceback, else the last
    lines of output.
    """
    for i in range(len(lines) - 1, -1, -1):
        match = _ERROR_RECORD.match(lines[i])
        if match:
            block = [match["message"]]
            for line in lines[i + 1:i + _MAX_ERROR_LINES]:
                if _LOG_RECORD.match(line) or _DVC_LINE.match(line):
                    break
                block.append(line)
            return "\n".join(block).strip(), match["logger"].split(".")[0] == "confkd"
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last)"):
            tail = [line for line in lines[i + 1:] if line.strip() and not _DVC_LINE.match(line)]
            if tail:
                return tail[-1].strip(), False
    return "\n".join(line for line in lines[-5:] if line.strip()), False


def _child_env() -> dict[str, str]:
    """The environment of the child: unbuffered (so output streams live), this interpreter's
    folder first on PATH (stage commands call ``python``), and this copy of confkd importable."""
    env = dict(os.environ)
    for key, value in OFFLINE_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    env["PYTHONUNBUFFERED"] = "1"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    package_root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def reproduce_stage(repo_dir: str | os.PathLike, name: str, force: bool = False,
                    on_line: Callable[[str], None] | None = None) -> StageResult:
    """Reproduce one stage through DVC (``single_item``: upstream stages are not touched).

    DVC decides whether the stage runs: it returns the stages it reproduced, so an empty answer
    means "unchanged, skipped" without parsing any text. Every output line of DVC and of the
    stage command is passed to ``on_line`` as it appears. Failures come back as a result with the
    stage's own error message (see :func:`error_excerpt`), not as an exception.
    """
    root = find_repo_root(repo_dir)
    with tempfile.TemporaryDirectory(prefix="confkd-stage-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "confkd.orchestration", "--target", name, "--result", str(result_file)]
        if force:
            cmd.append("--force")
        returncode, lines, seconds = _stream(cmd, root, on_line)
        outcome = json.loads(result_file.read_text()) if result_file.exists() else None
    if outcome is not None and returncode == 0:
        status = SKIPPED if not outcome["reproduced"] else RESTORED if outcome["restored"] else RAN
        return StageResult(name, status, seconds, output_tail=lines[-20:])
    excerpt, user_error = error_excerpt(lines)
    if outcome is None:  # the child died before reporting (killed, out of memory): worth a retry
        dvc_error, permanent = f"stage runner exited with {returncode}", False
    else:
        dvc_error = outcome.get("error") or f"stage runner exited with {returncode}"
        permanent = user_error or not outcome.get("command_failed", True)
    message = f"stage '{name}' failed: {excerpt}\n(dvc: {dvc_error})" if excerpt else f"stage '{name}' failed: {dvc_error}"
    return StageResult(name, FAILED, seconds, error=message, permanent=permanent, output_tail=lines[-50:])


def _stream(cmd: list[str], root: Path, on_line: Callable[[str], None] | None) -> tuple[int, list[str], float]:
    """Run ``cmd`` in ``root``, passing each output line to ``on_line`` as it appears:
    ``(return code, the last 400 lines, seconds)``."""
    tail: deque[str] = deque(maxlen=400)
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, cwd=root, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, encoding="utf-8", errors="replace") as proc:
        for raw in proc.stdout:  # text mode: "\r" (progress bars) also ends a line
            line = clean_line(raw)
            if line.strip():
                tail.append(line)
                if on_line is not None:
                    on_line(line)
    return proc.returncode, list(tail), round(time.perf_counter() - t0, 2)


def run_outside_dvc(repo_dir: str | os.PathLike, name: str, argv: list[str],
                    on_line: Callable[[str], None] | None = None) -> StageResult:
    """Run a stage's command directly, NOT through DVC (nothing enters dvc.lock): for results that are not
    the pipeline's, such as a report over a subset of the configurations. Status ``UNTRACKED``."""
    root = find_repo_root(repo_dir)
    returncode, lines, seconds = _stream([sys.executable, *argv], root, on_line)
    if returncode == 0:
        return StageResult(name, UNTRACKED, seconds, output_tail=lines[-20:])
    excerpt, user_error = error_excerpt(lines)
    return StageResult(name, FAILED, seconds, error=f"stage '{name}' failed: {excerpt or f'exit {returncode}'}",
                       permanent=user_error, output_tail=lines[-50:])


def read_metrics(repo_dir: str | os.PathLike, path: str) -> dict[str, Any]:
    """A JSON metrics file as a flat mapping (nested keys joined with '.', as ``dvc metrics show``)."""
    file = find_repo_root(repo_dir) / path
    data = json.loads(file.read_text(encoding="utf-8"))

    def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(node, dict):
            return {prefix: node}
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out

    return flatten(data)


# --------------------------------------------------------------------------------------- child


class _RunCacheHits(logging.Handler):
    """Notes DVC's "is cached - skipping run" message: the stage's outputs came from the run cache."""

    hit = False

    def emit(self, record: logging.LogRecord) -> None:
        if "is cached - skipping run" in record.getMessage():
            self.hit = True


def _child_main(argv: list[str] | None = None) -> int:
    """Reproduce one stage with DVC's Python API and write what happened as JSON."""
    parser = argparse.ArgumentParser(description="reproduce one DVC stage (used by the pipeline flow)")
    parser.add_argument("--target", required=True)
    parser.add_argument("--result", required=True, help="where to write the JSON outcome")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)

    import dvc.logger
    from dvc.repo import Repo
    from dvc.stage.exceptions import StageCmdFailedError

    if not logging.getLogger("dvc").handlers:  # importing dvc usually sets up its console logging already
        dvc.logger.setup()  # DVC's own messages: "Running stage ...", "didn't change, skipping"
    run_cache = _RunCacheHits()
    logging.getLogger("dvc").addHandler(run_cache)
    try:
        with Repo(".") as repo:
            reproduced = repo.reproduce(args.target, single_item=True, force=args.force)
        outcome = {"reproduced": [s.addressing for s in reproduced], "restored": run_cache.hit}
        code = 0
    except Exception as err:  # noqa: BLE001 - reported to the parent, which decides what it means
        causes, cmd_failed, exc = [], False, err
        while exc is not None:
            causes.append(str(exc))
            cmd_failed = cmd_failed or isinstance(exc, StageCmdFailedError)
            exc = exc.__cause__
        outcome = {"error": ": ".join(c for c in causes if c), "command_failed": cmd_failed}
        code = 1
    Path(args.result).write_text(json.dumps(outcome))
    return code


if __name__ == "__main__":
    sys.exit(_child_main())
