"""Where the pipeline's files live: every stage's inputs and outputs and every DVC stage name, in one place.

The library's stage functions receive their locations from here (a :class:`Layout` over a root folder: the
repository, or a scratch copy for tuning trials and benchmarks); no other module spells a path of the
pipeline or the name of a DVC stage. ``dvc.yaml`` declares the same files, and ``tests/test_layout.py``
checks each stage's outs, metrics and plots against :func:`stage_outputs`, so the two cannot drift.

Models come in two families: the teachers (``teacher``, ``teacher_reference``) live at the top level
(``models/<name>``), the distilled students under ``distill/`` (``models/distill/<name>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEACHER = "teacher"
REFERENCE = "teacher_reference"
TEACHERS = (TEACHER, REFERENCE)

# DVC stage names (dvc.yaml); the per-configuration ones are foreach groups: ``distill@<name>``.
PREPARE, VALIDATE, AUGMENT, TUNE, DISTILL_TUNED, REPORT, EXPORT = (
    "prepare", "validate", "augment", "tune", "distill_tuned", "report", "export")
DISTILL, EVALUATE = "distill", "evaluate"


def train_stage(model: str, tuned_name: str | None = None) -> str:
    """The DVC stage that trains ``model`` (for messages such as "run `dvc repro <stage>`")."""
    if model in TEACHERS:
        return model
    if model == tuned_name:
        return DISTILL_TUNED
    return f"{DISTILL}@{model}"


def evaluate_stage(model: str, tuned_name: str | None = None) -> str:
    if model in TEACHERS:
        return f"{EVALUATE}_{model}"
    if model == tuned_name:
        return f"{EVALUATE}_tuned"
    return f"{EVALUATE}@{model}"


def _file(*parts: str, doc: str | None = None) -> property:
    """A fixed file or folder under the layout's root, declared in one line (read-only)."""
    return property(lambda self: Path(self.root, *parts), doc=doc or "/".join(parts))


@dataclass(frozen=True)
class Layout:
    """The pipeline's files under ``root``."""

    root: Path = Path(".")

    def _p(self, *parts: str) -> Path:
        return Path(self.root, *parts)

    # -- prepare / validate / augment --------------------------------------------------------------
    data_root = _file("data", doc="The embedded datasets (``data/<task>/``) and the unlabeled pools.")

    def embedded_task_dir(self, train_file: str) -> Path:
        """The folder of an embedded task, from its train file's path under :attr:`data_root`."""
        return self.data_root / Path(train_file).parent

    prepared_dir = _file("data", "prepared")

    @property
    def labels_file(self) -> Path:
        return self.prepared_dir / "labels.json"

    def split_file(self, split: str) -> Path:
        return self.prepared_dir / f"{split}.jsonl"

    prepare_report = _file("reports", "prepare.json")
    prepare_metrics = _file("metrics", "prepare.json")
    validation_report = _file("reports", "validation.json")
    validation_markdown = _file("reports", "validation.md")
    validation_metrics = _file("metrics", "validation.json")
    augmented_file = _file("data", "augmented", "augmented.jsonl")
    augmented_logits = _file("artifacts", "augment", "logits.npz")
    augment_metrics = _file("metrics", "augment.json")
    augment_work = _file("checkpoints", "augment")

    # -- per model: training -------------------------------------------------------------------------
    def _family(self, top: str, model: str) -> Path:
        return self._p(top, model) if model in TEACHERS else self._p(top, DISTILL, model)

    def model_dir(self, model: str) -> Path:
        return self._family("models", model)

    def logits_dir(self, model: str) -> Path:
        """Saved logits per split (``<split>.npz``): ``artifacts/<teacher>/logits`` or ``artifacts/distill/<name>``."""
        return self._p("artifacts", model, "logits") if model in TEACHERS else self._p("artifacts", DISTILL, model)

    def train_metrics(self, model: str) -> Path:
        return self._p("metrics", f"{model}.json") if model in TEACHERS else self._p("metrics", DISTILL, f"{model}.json")

    def history_file(self, model: str) -> Path:
        return self._family("plots", model) / "history.csv"

    def checkpoint_dir(self, model: str) -> Path:
        return self._family("checkpoints", model)

    # -- per model: evaluation -----------------------------------------------------------------------
    def eval_metrics(self, model: str) -> Path:
        return self._p("metrics", "eval", f"{model}.json")

    def predictions_dir(self, model: str) -> Path:
        return self._p("predictions", model)

    def eval_plots_dir(self, model: str) -> Path:
        return self._p("plots", "eval", model)

    def figures_dir(self, model: str) -> Path:
        return self._p("reports", "figures", model)

    # -- tune ------------------------------------------------------------------------------------------
    tune_work = _file("tune", "work")
    tune_db = _file("tune", "optuna.db", doc="The default study storage (``tune.storage``: sqlite), kept across runs (a DVC ``persist`` output).")
    best_params = _file("tune", "best_params.yaml")
    tune_reports = _file("reports", "tune")
    tune_metrics = _file("metrics", "tune.json")
    tune_plot = _file("plots", "tune", "trials.csv")

    # -- export ----------------------------------------------------------------------------------------
    export_dir = _file("models", "export")
    export_metrics = _file("metrics", "export.json")
    export_report = _file("reports", "export.md")
    latency_plot = _file("plots", "export", "latency.json")

    # -- report ----------------------------------------------------------------------------------------
    summary_markdown = _file("reports", "summary.md")
    summary_metrics = _file("metrics", "summary.json")
    accuracy_latency_plot = _file("plots", "report", "accuracy_latency.json")
    accuracy_latency_figure = _file("reports", "figures", "accuracy_latency.png")


DEFAULT = Layout()


# -- the per-stage views the library functions take -------------------------------------------------


@dataclass
class TeacherPaths:
    prepared_dir: Path = DEFAULT.prepared_dir
    model_dir: Path = DEFAULT.model_dir(TEACHER)
    logits_dir: Path = DEFAULT.logits_dir(TEACHER)
    metrics_path: Path = DEFAULT.train_metrics(TEACHER)
    history_path: Path = DEFAULT.history_file(TEACHER)
    checkpoint_dir: Path = DEFAULT.checkpoint_dir(TEACHER)

    @classmethod
    def of(cls, layout: Layout, model: str = TEACHER) -> "TeacherPaths":
        return cls(prepared_dir=layout.prepared_dir, model_dir=layout.model_dir(model),
                   logits_dir=layout.logits_dir(model), metrics_path=layout.train_metrics(model),
                   history_path=layout.history_file(model), checkpoint_dir=layout.checkpoint_dir(model))


def _model_file(method: str) -> property:
    """``Layout(root).<method>(name)`` as a read-only attribute of a per-model view with ``root`` and ``name``."""
    return property(lambda self: getattr(Layout(self.root), method)(self.name), doc=f"Layout.{method}(name)")


@dataclass
class DistillPaths:
    """Inputs (the prepared data, the teacher, its logits, the augmented set) may come from one place and
    the outputs go under ``root`` (tuning trials write into scratch folders and read the pipeline's data)."""

    name: str
    prepared_dir: Path = DEFAULT.prepared_dir
    augmented_file: Path = DEFAULT.augmented_file
    augmented_logits: Path = DEFAULT.augmented_logits
    teacher_dir: Path = DEFAULT.model_dir(TEACHER)
    teacher_logits_dir: Path = DEFAULT.logits_dir(TEACHER)
    root: Path = Path(".")

    @classmethod
    def of(cls, name: str, inputs: Layout, root: Path | None = None) -> "DistillPaths":
        return cls(name, prepared_dir=inputs.prepared_dir, augmented_file=inputs.augmented_file,
                   augmented_logits=inputs.augmented_logits, teacher_dir=inputs.model_dir(TEACHER),
                   teacher_logits_dir=inputs.logits_dir(TEACHER), root=inputs.root if root is None else root)

    # the outputs: the configuration's own files under ``root``
    model_dir = _model_file("model_dir")
    artifacts_dir = _model_file("logits_dir")
    metrics_path = _model_file("train_metrics")
    history_path = _model_file("history_file")
    checkpoint_dir = _model_file("checkpoint_dir")


@dataclass(frozen=True)
class ExportPaths:
    """The export stage reads the models under ``root`` and writes under ``out_root`` (default ``root``): a
    benchmark can export the real models without touching the pipeline's own outputs."""

    root: Path = Path(".")
    out_root: Path | None = None

    @property
    def inputs(self) -> Layout:
        return Layout(self.root)

    @property
    def outputs(self) -> Layout:
        return Layout(self.root if self.out_root is None else self.out_root)


# -- what dvc.yaml must declare -----------------------------------------------------------------------


def stage_outputs(configs, tuned_name: str, layout: Layout = DEFAULT) -> dict[str, set[Path]]:
    """Every stage's outputs (DVC outs, metrics and plots), by DVC stage name, for the configurations
    ``configs``: what ``dvc.yaml`` must declare (checked by a test)."""
    L = layout
    out: dict[str, set[Path]] = {
        PREPARE: {L.prepared_dir, L.prepare_report, L.prepare_metrics},
        VALIDATE: {L.validation_report, L.validation_markdown, L.validation_metrics},
        AUGMENT: {L.augmented_file, L.augmented_logits, L.augment_metrics},
        TUNE: {L.tune_db, L.best_params, L.tune_reports, L.tune_metrics, L.tune_plot},
        EXPORT: {L.export_dir, L.export_report, L.export_metrics, L.latency_plot},
        REPORT: {L.summary_markdown, L.summary_metrics, L.accuracy_latency_plot, L.accuracy_latency_figure},
    }
    for model in (*TEACHERS, *configs, tuned_name):
        train = train_stage(model, tuned_name)
        out[train] = {L.model_dir(model), L.logits_dir(model), L.train_metrics(model), L.history_file(model)}
        out[evaluate_stage(model, tuned_name)] = {L.predictions_dir(model), L.figures_dir(model),
                                                   L.eval_metrics(model), L.eval_plots_dir(model)}
    return out
