"""A shared PostgreSQL study: two worker processes tune one study through confkd's ``run_trials``.

A real PostgreSQL server (the distribution's ``postgresql`` package) is started on a free
loopback port in a temporary folder and stopped afterwards. The parent creates the study once
(``open_study``, as the tuning flow does), then two worker processes each call ``run_trials``
on the tiny workspace with their own sampler seed and half of the trials; every trial must land
exactly once.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from .conftest import REPO_ROOT
from .test_tuning import _params, _workspace

pytestmark = pytest.mark.integration

N_TRIALS = 4
WORKERS = 2
SERVER_USER = "postgres"  # PostgreSQL refuses to run as root
WORKER = """
import json, sys
from pathlib import Path
from confkd.config import load_params
from confkd.layout import Layout
from confkd.tuning.study import run_trials
spec = json.loads(sys.argv[1])
done = run_trials(load_params(spec["params"]), Layout(Path(spec["root"])), n_trials=spec["n_trials"],
                  storage=spec["storage"], max_new=spec["max_new"], sampler_seed=spec["seed"])
print("finished", done)
"""


def _server_bin() -> Path:
    """The newest installed server's binaries; a missing package fails the test with the fix."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: "
                    "run `apt-get install -y postgresql` (as root)")
    return Path(found[-1]).parent


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when the tests run as root; None otherwise."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        pytest.fail(f"no '{SERVER_USER}' system user to run PostgreSQL as (root is refused): "
                    "run `apt-get install -y postgresql`, which creates it")


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *cmd] if _server_user() else cmd


def _run(cmd: list[str], what: str, timeout: float = 180) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A fresh PostgreSQL server on 127.0.0.1 with an empty database ``optuna``; its SQLAlchemy URL."""
    try:
        import psycopg
    except ImportError:
        pytest.fail("psycopg is not installed: pip install 'psycopg[binary]'")
    bin_dir = _server_bin()
    base = Path(tempfile.mkdtemp(prefix="confkd-pg-"))  # not under pytest's tmp: the server user must reach it
    data, log = base / "data", base / "server.log"
    user = _server_user()
    if user:
        os.chown(base, user.pw_uid, user.pw_gid)
    port = _free_port()
    started = False
    try:
        _run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "confkd", "--auth=trust",
                              "-E", "UTF8", "--no-sync"]), "initdb")
        _run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "120",
                              "-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start"]),
             "pg_ctl start")
        started = True
        with psycopg.connect(host="127.0.0.1", port=port, user="confkd", dbname="postgres", autocommit=True) as con:
            con.execute("CREATE DATABASE optuna")
        yield f"postgresql+psycopg://confkd@127.0.0.1:{port}/optuna"
    finally:
        if started:
            subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def _worker(spec: dict) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(spec)], env=env, cwd=spec["root"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_workers_share_one_postgres_study(postgres_url, trained_teacher, tiny_model_dir, tmp_path):
    import psycopg

    from confkd.tuning.parallel import prepare_study

    root = _workspace(tmp_path, trained_teacher)
    params = _params(tiny_model_dir, n_trials=N_TRIALS, budget={"max_steps": 6, "eval_every_steps": 2})
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(by_alias=True, mode="json"), sort_keys=False))
    study = prepare_study(params, root, postgres_url)  # the tables and the study exist before the workers
    assert study.counts == {}

    procs = [_worker({"params": str(params_file), "root": str(root), "n_trials": N_TRIALS, "storage": postgres_url,
                      "max_new": N_TRIALS // WORKERS, "seed": params.seed + i}) for i in range(WORKERS)]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a tuning worker did not finish within 600 s")
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{out[-3000:]}"

    dbname = postgres_url.rsplit("/", 1)[1]
    host, port = postgres_url.split("@", 1)[1].split("/")[0].split(":")
    with psycopg.connect(host=host, port=int(port), user="confkd", dbname=dbname) as con:
        trials = con.execute("SELECT t.number, t.state FROM trials t JOIN studies s USING (study_id) "
                             "WHERE s.study_name = %s ORDER BY t.number", (study.name,)).fetchall()
        temperatures = con.execute("SELECT p.param_value FROM trial_params p JOIN trials t USING (trial_id) "
                                   "WHERE p.param_name = 'temperature'").fetchall()
    numbers = [n for n, _ in trials]
    assert len(trials) == N_TRIALS, trials
    assert sorted(set(numbers)) == list(range(N_TRIALS)), f"duplicated or missing trial numbers: {trials}"
    assert all(state in ("COMPLETE", "PRUNED") for _, state in trials), trials  # none RUNNING, FAIL or WAITING
    assert len({v for (v,) in temperatures}) == N_TRIALS  # distinct sampler seeds: no repeated trial
    assert all(out.strip().splitlines()[-1].startswith("finished") for out in outputs)
