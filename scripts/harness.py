"""Running the stack on this machine for benchmarks (scripts/deploy, scripts/bench) and for the
process-level tests (tests/deploy, tests/reliability): the Procfile's processes with production
settings against PostgreSQL, Redis and (optionally) a local S3 server, waiting on them, stopping
them, the memory of process trees from /proc, and the statistics and figure files benchmarks
report. Standard library only at import time (tests import it as `scripts.harness`)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "data" / "butterflies50"
VENV_BIN = Path(sys.executable).parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.25, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def procfile_command(process_type: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process_type:
            return command.strip()
    raise KeyError(process_type)


def stop(process: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 30) -> int | None:
    """Signal a process group started with start_new_session, then kill it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    return process.returncode


@contextlib.contextmanager
def moto_server(log_dir: Path):
    port = free_port()
    log = open(log_dir / "moto.log", "wb")
    process = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import boto3

        keys = {"aws_access_key_id": "bench", "aws_secret_access_key": secrets.token_hex(8)}
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)

        def up():
            try:
                client.list_buckets()
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        wait_until(up, 30, what="moto_server")
        bucket = f"butterflysite-bench-{secrets.token_hex(4)}"
        client.create_bucket(Bucket=bucket)
        yield {
            "AWS_STORAGE_BUCKET_NAME": bucket, "AWS_S3_ENDPOINT_URL": endpoint, "AWS_S3_REGION_NAME": "us-east-1",
            "AWS_ACCESS_KEY_ID": keys["aws_access_key_id"], "AWS_SECRET_ACCESS_KEY": keys["aws_secret_access_key"],
        }
    finally:
        stop(process)


@contextlib.contextmanager
def scratch_database(database_url: str):
    import psycopg2

    name = f"bench_{secrets.token_hex(4)}"
    parts = urlsplit(database_url)
    admin = psycopg2.connect(database_url)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        with admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def redis_db(url: str, db: int) -> str:
    import redis

    moved = urlunsplit(urlsplit(url)._replace(path=f"/{db}"))
    redis.Redis.from_url(moved).flushdb()
    return moved


def production_env(*, host: str = "bench.herokuapp.com", **extra) -> dict:
    """What a dyno's environment holds (config vars), minus anything from this shell."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DJANGO_", "AWS_", "DATABASE_", "REDIS_", "CELERY_", "BUCKETEER_"))}
    env.update({
        "DJANGO_ENV": "production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": host,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def manage(env: dict, *args, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """python manage.py <args> in a fresh process with `env`; raises with its output if it fails."""
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def start(process_type: str, env: dict, log: Path, extra_args: str = "") -> subprocess.Popen:
    command = procfile_command(process_type) + (" " + extra_args if extra_args else "")
    return subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, start_new_session=True,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def descendants(pid: int) -> list[int]:
    """pid and every process below it (from /proc/<pid>/task/*/children)."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                stack += [int(child) for child in (task / "children").read_text().split()]
    return found


def memory_kb(pid: int) -> dict:
    """RSS and PSS (shared pages split between sharers, what a container's usage adds up to)."""
    out = {"pid": pid, "rss_kb": 0, "pss_kb": 0, "cmd": ""}
    with contextlib.suppress(OSError):
        out["cmd"] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120].strip()
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == "Rss":
                out["rss_kb"] = int(value.split()[0])
            elif key == "Pss":
                out["pss_kb"] = int(value.split()[0])
    return out


def tree_memory(root_pid: int) -> dict:
    """Memory of the Python processes under a `bash -c` Procfile command."""
    processes = [memory_kb(pid) for pid in descendants(root_pid)]
    processes = [p for p in processes if "python" in p["cmd"] or "gunicorn" in p["cmd"] or "celery" in p["cmd"]]
    return {
        "processes": processes,
        "rss_mb": round(sum(p["rss_kb"] for p in processes) / 1024, 1),
        "pss_mb": round(sum(p["pss_kb"] for p in processes) / 1024, 1),
    }


def percentile(values: list[float], q: float) -> float:
    """The q-quantile, interpolating linearly between the closest ranks."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(seconds: list[float]) -> dict:
    return {"n": len(seconds), "p50_s": round(percentile(seconds, 0.5), 3), "p95_s": round(percentile(seconds, 0.95), 3),
            "min_s": round(min(seconds), 3), "max_s": round(max(seconds), 3),
            "mean_s": round(sum(seconds) / len(seconds), 3)}


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages: on a shared machine, whether others were busy."""
    return [round(x, 2) for x in os.getloadavg()]


def report(figures: dict, json_path: str | None) -> None:
    """Prints a benchmark's figures and, when asked, saves them (docs/perf/*.json)."""
    print(json.dumps(figures, indent=2))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(figures, indent=2) + "\n")
