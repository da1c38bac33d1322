"""A dyno restart must not lose a classification in flight.

Heroku stops a dyno by sending SIGTERM to every process in it, then SIGKILL 30 s later. The
Procfile's worker line (REMAP_SIGTERM=SIGQUIT) turns that into Celery's soft shutdown: a task
gets CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT seconds to finish, and one that cannot is handed back
to Redis (acks_late), where the next worker picks it up. These tests run the Procfile's own
worker command, signal its whole process group the way Heroku does, and watch Redis.
"""

import shlex
import subprocess
import time
import uuid

import pytest
import redis

from scripts.harness import procfile_command
from tests.deploy.conftest import ROOT, manage, production_env, stop, wait_until

pytestmark = pytest.mark.deploy


@pytest.fixture
def worker_env(postgres_database, redis_url, tmp_path):
    env = production_env(
        DATABASE_URL=postgres_database, REDIS_URL=redis_url, DJANGO_ALLOW_LOCAL_MEDIA="true",
        DJANGO_MEDIA_ROOT=tmp_path / "media", CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT="3",
    )
    manage(env, "migrate", "--noinput", timeout=180)
    return env


def start_worker(env, log_path):
    command = procfile_command("worker") + " --include tests.deploy.slow_tasks --hostname " + shlex.quote(
        f"shutdown-test-{uuid.uuid4().hex[:6]}@%h"
    )
    log = open(log_path, "ab")
    return subprocess.Popen(
        ["bash", "-c", command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def send_slow(env, key, seconds):
    from celery import Celery

    app = Celery(broker=env["REDIS_URL"])
    app.send_task("deploy_tests.slow", args=[key, seconds], acks_late=True)


def events(client, key):
    return [item.decode() for item in client.lrange(key, 0, -1)]


def test_sigterm_requeues_the_task_in_flight_and_the_next_worker_finishes_it(worker_env, tmp_path):
    client = redis.Redis.from_url(worker_env["REDIS_URL"])
    key = f"shutdown-{uuid.uuid4().hex}"
    log = tmp_path / "worker.log"
    first = start_worker(worker_env, log)
    try:
        send_slow(worker_env, key, 60)  # far longer than the soft shutdown allows
        wait_until(lambda: events(client, key), 120, what=f"the task to start (log: {log})")
        started = time.monotonic()
        code = stop(first, timeout=28)  # SIGTERM to the whole group, as Heroku does
        assert time.monotonic() - started < 25, "worker outlived Heroku's 30 s grace period"
        assert first.returncode is not None, code
        assert not any(e.startswith("done") for e in events(client, key)), "task ran to the end?"
    finally:
        stop(first)
    second = start_worker(worker_env, log)
    try:
        client.delete(key)
        # The re-queued message reaches the new worker, which runs it again (60 s would be long:
        # the restarted run is only required to start).
        wait_until(lambda: any(e.startswith("start") for e in events(client, key)), 120,
                   what=f"the re-queued task to start on the new worker (log: {log})")
        assert events(client, key)[0].split()[1] != str(first.pid)
    finally:
        stop(second)


def test_sigterm_lets_a_short_task_finish_first(worker_env, tmp_path):
    client = redis.Redis.from_url(worker_env["REDIS_URL"])
    key = f"shutdown-{uuid.uuid4().hex}"
    log = tmp_path / "worker.log"
    worker = start_worker(worker_env, log)
    try:
        send_slow(worker_env, key, 1.5)  # shorter than the 3 s soft shutdown
        wait_until(lambda: events(client, key), 120, what=f"the task to start (log: {log})")
        stop(worker, timeout=28)
        assert [e.split()[0] for e in events(client, key)] == ["start", "done"], log.read_text()[-3000:]
    finally:
        stop(worker)
    # Nothing was left behind to run twice.
    assert client.llen("celery") == 0
