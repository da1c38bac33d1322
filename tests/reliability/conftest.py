"""Real processes for fault tests: a redis-server of the test's own (stopped and started at will),
a throwaway PostgreSQL cluster (initdb/pg_ctl; restarted at will), gunicorn serving the app, and
Celery workers that can be SIGKILLed. Never the shared Redis or PostgreSQL: those keep running.

Every process is started in its own session (process group) and killed with its children."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from scripts.harness import ROOT, VENV_BIN, free_port, stop, wait_until

__all__ = ["ROOT", "free_port", "stop", "wait_until"]
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


class Logged(subprocess.Popen):
    """A child process whose merged output is collected in .log (a list of lines)."""

    def __init__(self, command, env, cwd=ROOT):
        super().__init__(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(iter(self.stdout.readline, "")), daemon=True).start()

    def text(self, last: int = 80) -> str:
        return "".join(self.log[-last:])


# Redis


class RedisServer:
    """redis-server on a free port, no persistence: stopping it loses every queued message, as a
    crashed broker does."""

    def __init__(self, directory: Path):
        self.port, self.directory, self.process = free_port(), directory, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = Logged(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(self.directory)], env=dict(os.environ))
        wait_until(self.ping, 20, what=f"redis-server on {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.process is not None:
            stop(self.process, signal.SIGKILL)
            self.process = None


@pytest.fixture
def redis_server(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("needs the redis-server binary (apt-get install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


# PostgreSQL


class PostgresCluster:
    """A throwaway cluster (initdb) on a free port; PostgreSQL refuses to run as root, so as root
    every pg_ctl runs as the `postgres` user."""

    def __init__(self, directory: Path):
        self.directory, self.port = directory, free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args, check=True, timeout=120):
        command = [str(a) for a in args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, timeout=timeout, capture_output=True, text=True)

    def init(self):
        self.directory.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(PG_BIN / "initdb", "-D", self.directory / "data", "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self):
        self._run(PG_BIN / "pg_ctl", "-D", self.directory / "data", "-l", self.directory / "server.log", "-w", "-t", "60",
                  "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self, mode="fast"):
        self._run(PG_BIN / "pg_ctl", "-D", self.directory / "data", "-m", mode, "-w", "stop", check=False)

    def database_url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        self._run(PG_BIN / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", name)
        return self.database_url(name)


@pytest.fixture
def postgres_cluster(tmp_path_factory):
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"needs PostgreSQL server binaries in {PG_BIN} (set PG_BIN)")
    if os.geteuid() == 0 and not shutil.which("runuser"):
        pytest.skip("running as root needs runuser to start PostgreSQL as the postgres user")
    base = Path(tempfile_dir()) / f"pg-{uuid.uuid4().hex[:8]}"
    cluster = PostgresCluster(base)
    cluster.init()
    yield cluster
    cluster.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


def tempfile_dir() -> str:
    # A path the postgres user can enter (pytest's tmp_path lives under root's 0700 folders).
    import tempfile

    return tempfile.gettempdir()


# The application


def app_env(*, database_url: str, broker_url: str, media_root: Path, queue: str, **extra) -> dict:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "butterflysite.settings",
        "DJANGO_ENV": "development",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": broker_url,
        "REDIS_URL": broker_url,
        "DJANGO_MEDIA_ROOT": str(media_root),
        "CLASSIFIER_TASK_QUEUE": queue,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DJANGO_TEST_DATABASE_NAME", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_gunicorn(env: dict, workers: int = 2) -> tuple[Logged, str]:
    port = free_port()
    process = Logged([str(VENV_BIN / "gunicorn"), "butterflysite.wsgi", "--bind", f"127.0.0.1:{port}", "--workers",
                      str(workers), "--timeout", "30", "--graceful-timeout", "5"], env=env)
    url = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{process.text()}")
        try:
            urllib.request.urlopen(url + "/accounts/login/", timeout=2)
            return True
        except OSError:
            return False

    wait_until(up, 60, what="gunicorn")
    return process, url


def start_worker(env: dict, *, beat: bool = False, models: int | None = None) -> Logged:
    """A Celery worker (prefork, one child) on env's queue, with embedded beat as the Procfile runs
    it when `beat`; waits until it has loaded (or failed to load) `models` models."""
    command = [str(VENV_BIN / "celery"), "-A", "butterflysite", "worker", "-Q", env["CLASSIFIER_TASK_QUEUE"],
               "-n", f"{uuid.uuid4().hex[:8]}@%h", "--concurrency", "1", "--loglevel", "INFO",
               "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if beat:
        command += ["--beat", "--scheduler", "celery.beat:Scheduler"]
    process = Logged(command, env=env)

    def ready():
        if process.poll() is not None:
            raise AssertionError(f"worker exited:\n{process.text()}")
        text = "".join(process.log)
        return " ready." in text and (models is None or text.count("loaded model") + text.count("could not preload") >= models)

    wait_until(ready, 240, interval=0.5, what="the Celery worker")
    return process


@pytest.fixture
def processes():
    """Collects started processes and kills them (and their children) at the end of the test."""
    started: list[subprocess.Popen] = []
    yield started
    for process in reversed(started):
        stop(process, signal.SIGKILL)


def subprocess_database_url(connection) -> str:
    from tests.conftest import _database_url

    return _database_url(connection)


def api_token(username: str) -> str:
    from django.contrib.auth import get_user_model

    from accounts.services import api_token_create

    user = get_user_model().objects.create_user(username=username, password="correct horse battery")
    return api_token_create(user=user)[1]


def api_upload(base_url: str, token: str, path: Path, timeout: float = 30) -> tuple[int, dict, float]:
    """POST one photo to /api/photos/ with urllib (a real HTTP client); (status, JSON, seconds)."""
    import json

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(base_url + "/api/photos/", data=body, method="POST", headers={
        "Authorization": f"Token {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}"), time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), time.monotonic() - started


def sample_photos(butterflies_dir: Path, n: int) -> list[Path]:
    species = sorted(p for p in (butterflies_dir / "test").iterdir() if p.is_dir())
    return [sorted(species[i % len(species)].glob("*.jpg"))[i // len(species)] for i in range(n)]
