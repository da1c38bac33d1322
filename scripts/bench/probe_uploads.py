#!/usr/bin/env python3
"""Probes of issue 13 (items 2 and 9) against the web process as production runs it
(docs/reliability.md, "Uploads under abuse" and "Slow clients"):

    flock /tmp/butterflysite-bench.lock .venv/bin/python scripts/bench/probe_uploads.py posts
    flock /tmp/butterflysite-bench.lock .venv/bin/python scripts/bench/probe_uploads.py big
    flock /tmp/butterflysite-bench.lock .venv/bin/python scripts/bench/probe_uploads.py slow
    ... --root /path/to/another/checkout   (measure that checkout's web process: before/after)

Starts a scratch PostgreSQL database on --postgres, Redis database 6 of --redis (cache and
broker; no Celery worker runs: photos stay pending), a private bucket on moto_server (S3 over
HTTP), and the Procfile's `web` command of --root with production settings, bound to loopback.
Its temporary files go to a folder of its own (TMPDIR), so what a request leaves there is counted.

- posts: 3 users post the upload form at once, each 20 photos of 10.4 MB (one generated JPEG,
  3600x2700); meanwhile a client loads the sign-in page every 0.5 s. Reports each post's status
  and time, the sign-in page's slowest answer, photo rows, bucket objects no row refers to, and
  temporary files left.
- big: one form post of a single 1 GiB file; reports the answer, its time, and the most the
  temporary folder held while it ran.
- slow: two clients send a request one byte every 2 s (for --slow-seconds); meanwhile a normal
  page (the sign-in page) is loaded every second. Reports its latencies.

Everything it started is stopped at the end. Loopback only; every loop is bounded.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import harness as h  # noqa: E402

HOST = "probe.herokuapp.com"
HTTPS = {"X-Forwarded-Proto": "https", "Host": HOST}  # what Heroku's router adds
PHOTO_CACHE = Path(tempfile.gettempdir()) / "butterflysite-probe-10.4MB.jpg"


def big_photo() -> bytes:
    """A 3600x2700 JPEG of about 10.4 MB (noise does not compress), made once and cached."""
    if not PHOTO_CACHE.exists():
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        width, height = 3600, 2700
        ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
        pixels = (ramp + rng.normal(0, 40, (height, width, 3))).clip(0, 255).astype(np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=97)
        PHOTO_CACHE.write_bytes(out.getvalue())
    return PHOTO_CACHE.read_bytes()


class Session:
    """A signed-in browser: cookies by hand, since production cookies are Secure and this talks
    plain HTTP to gunicorn behind a pretend TLS-terminating router."""

    def __init__(self, base: str):
        self.base, self.cookies = base, {}

    def request(self, method, path, timeout=600, **kwargs):
        headers = {**HTTPS, **kwargs.pop("headers", {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = requests.request(method, self.base + path, headers=headers, allow_redirects=False,
                                    timeout=timeout, **kwargs)
        for cookie in response.raw.headers.getlist("Set-Cookie"):
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response

    def csrf(self, path) -> str:
        page = self.request("GET", path)
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)

    def login(self, username, password):
        token = self.csrf("/accounts/login/")
        response = self.request("POST", "/accounts/login/", data={
            "username": username, "password": password, "csrfmiddlewaretoken": token,
        }, headers={"Referer": f"https://{HOST}/accounts/login/"})
        assert response.status_code == 302, (response.status_code, response.text[:300])


def multipart(fields: dict, files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "probe" + os.urandom(8).hex()
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    for field, name, content in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
                     "Content-Type: image/jpeg\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def timed_get(base: str, path: str, timeout: float = 60) -> tuple[int | str, float]:
    started = time.monotonic()
    try:
        status = requests.get(base + path, headers=HTTPS, timeout=timeout, allow_redirects=False).status_code
    except requests.RequestException as error:
        status = type(error).__name__
    return status, round(time.monotonic() - started, 3)


class PagePoller(threading.Thread):
    """Loads `path` every `interval` seconds until stopped; keeps (status, seconds)."""

    def __init__(self, base, path, interval):
        super().__init__(daemon=True)
        self.base, self.path, self.interval, self.results, self.done = base, path, interval, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            self.results.append(timed_get(self.base, self.path))
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join(120)
        seconds = [s for _, s in self.results]
        statuses = sorted({str(code) for code, _ in self.results})
        return {"n": len(seconds), "statuses": statuses, "max_s": max(seconds, default=None),
                "p50_s": round(h.percentile(seconds, 0.5), 3) if seconds else None}


def folder_bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            pass  # deleted while walking
    return total


def bucket_objects(env: dict) -> list[dict]:
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_S3_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    objects = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=env["AWS_STORAGE_BUCKET_NAME"]):
        objects += [{"key": o["Key"], "size": o["Size"]} for o in page.get("Contents", [])]
    return objects


def referenced_names(env: dict, root: Path) -> tuple[int, set[str]]:
    script = ("import json; from classifier.models import Photo; rows = list(Photo.objects.values_list("
              "'original', 'display', 'thumbnail')); print(json.dumps([len(rows), sorted({n for r in rows for n in r if n})]))")
    result = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300, check=True)
    count, names = json.loads(result.stdout.strip().splitlines()[-1])
    return count, set(names)


def leftovers(env: dict, root: Path, temp_dir: Path) -> dict:
    rows, names = referenced_names(env, root)
    objects = bucket_objects(env)
    orphans = [o for o in objects if o["key"] not in names]
    temp_files = [p for p in temp_dir.rglob("*") if p.is_file()]
    return {
        "photo_rows": rows,
        "bucket_objects": len(objects),
        "orphan_objects": len(orphans),
        "orphan_mb": round(sum(o["size"] for o in orphans) / 1e6, 1),
        "temp_files_left": len(temp_files),
        "temp_mb_left": round(sum(p.stat().st_size for p in temp_files) / 1e6, 1),
    }


def probe_posts(base: str, env: dict, root: Path, temp_dir: Path, users: list[str]) -> dict:
    photo = big_photo()
    sessions = []
    for username in users:
        session = Session(base)
        session.login(username, "probe-password-123456")
        sessions.append(session)
    answers = [None] * len(sessions)

    def post(index, session):
        token = session.csrf("/upload/")
        body, content_type = multipart({"csrfmiddlewaretoken": token},
                                       [("images", f"p{i}.jpg", photo) for i in range(20)])
        started = time.monotonic()
        try:
            response = session.request("POST", "/upload/", data=body, headers={
                "Content-Type": content_type, "Referer": f"https://{HOST}/upload/"})
            status = response.status_code
        except requests.RequestException as error:
            status = type(error).__name__
        answers[index] = {"status": status, "seconds": round(time.monotonic() - started, 1)}

    poller = PagePoller(base, "/accounts/login/", 0.5)
    poller.start()
    threads = [threading.Thread(target=post, args=(i, s)) for i, s in enumerate(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(900)
    page = poller.stop()
    time.sleep(2)  # let a killed worker's replacement boot before counting
    return {"request_mb": round(len(photo) * 20 / 1e6, 1), "photo_mb": round(len(photo) / 1e6, 2),
            "posts": answers, "sign_in_page_meanwhile": page, **leftovers(env, root, temp_dir)}


def probe_big(base: str, env: dict, root: Path, temp_dir: Path, username: str, size: int) -> dict:
    session = Session(base)
    session.login(username, "probe-password-123456")
    token = session.csrf("/upload/")
    boundary = "probe" + os.urandom(8).hex()
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n{token}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="huge.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    class Body:
        """The multipart body, made while it is sent; its length is known, so it goes with a
        Content-Length (as a browser sends a file), not chunked. (No tell(): requests would then
        send it chunked.)"""

        def __init__(self):
            self.parts, self.length = [head, None, tail], len(head) + size + len(tail)
            self.left = size

        def __len__(self):
            return self.length

        def read(self, n=-1):
            n = 1024 * 1024 if n is None or n < 0 else n
            while self.parts:
                part = self.parts[0]
                if part is None:
                    if self.left > 0:
                        piece = min(n, self.left)
                        self.left -= piece
                        return b"\xff" * piece
                    self.parts.pop(0)
                    continue
                self.parts[0], piece = part[n:], part[:n]
                if not self.parts[0]:
                    self.parts.pop(0)
                return piece
            return b""

    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], folder_bytes(temp_dir))
            stop.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Referer": f"https://{HOST}/upload/"}
    try:
        response = session.request("POST", "/upload/", data=Body(), headers=headers)
        answer = {"status": response.status_code, "message": re.sub(r"\s+", " ", re.search(
            r'role="alert">(.*?)</', response.text, re.S).group(1)) if 'role="alert"' in response.text else None}
    except requests.RequestException as error:
        answer = {"status": type(error).__name__}
    answer["seconds"] = round(time.monotonic() - started, 2)
    time.sleep(1)
    stop.set()
    watcher.join(10)
    return {"file_gb": round(size / 2**30, 2), **answer, "temp_peak_mb": round(peak[0] / 1e6, 1),
            **leftovers(env, root, temp_dir)}


def slow_client(port: int, seconds: float, sent: list):
    """Sends a request line and headers one byte every 2 s, for `seconds`."""
    request = f"POST /accounts/login/ HTTP/1.1\r\nHost: {HOST}\r\nX-Forwarded-Proto: https\r\n".encode() + b"X" * 10_000
    deadline = time.monotonic() + seconds
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for byte in request:
                if time.monotonic() >= deadline:
                    break
                sock.sendall(bytes([byte]))
                sent.append(1)
                time.sleep(2)
    except OSError:
        pass  # the server closed it: that is the point


def probe_slow(base: str, port: int, seconds: float) -> dict:
    baseline = [timed_get(base, "/accounts/login/")[1] for _ in range(5)]
    sent: list = []
    clients = [threading.Thread(target=slow_client, args=(port, seconds, sent), daemon=True) for _ in range(2)]
    for client in clients:
        client.start()
    time.sleep(3)  # both connections open and sending
    poller = PagePoller(base, "/accounts/login/", 1.0)
    poller.start()
    time.sleep(max(1.0, seconds - 6))
    page = poller.stop()
    for client in clients:
        client.join(seconds + 30)
    return {"page_alone_p50_s": round(h.percentile(baseline, 0.5), 3), "slow_clients": 2,
            "slow_bytes_sent": len(sent), "slow_seconds": seconds, "page_meanwhile": page,
            "page_latencies_s": [s for _, s in poller.results]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("probe", choices=["posts", "big", "slow"])
    parser.add_argument("--root", type=Path, default=h.ROOT, help="checkout whose Procfile web command runs")
    parser.add_argument("--postgres", default=os.environ.get("DATABASE_URL", h.DEFAULT_DATABASE_URL))
    parser.add_argument("--redis", default=h.DEFAULT_REDIS_URL)
    parser.add_argument("--big-gb", type=float, default=1.0)
    parser.add_argument("--slow-seconds", type=float, default=40.0)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="probe-uploads-"))
    temp_dir = work / "tmp"
    temp_dir.mkdir()
    web = None
    try:
        with h.moto_server(work) as bucket, h.scratch_database(args.postgres) as database_url:
            port = h.free_port()
            env = h.production_env(host=HOST, **bucket, DATABASE_URL=database_url, REDIS_URL=h.redis_db(args.redis, 6),
                                   PORT=port, WEB_CONCURRENCY=2, TMPDIR=temp_dir, PYTHONPATH=root,
                                   DJANGO_STATIC_ROOT=work / "staticfiles", ML_ARTIFACTS_CACHE_DIR=work / "artifacts",
                                   GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port}")
            for command in (["collectstatic", "--noinput", "-v", "0"], ["migrate", "--noinput", "-v", "0"]):
                subprocess.run([sys.executable, "manage.py", *command], cwd=root, env=env, check=True,
                               capture_output=True, timeout=600)
            users = ["probe1", "probe2", "probe3"]
            create = "; ".join(f"User.objects.create_user('{u}', password='probe-password-123456')" for u in users)
            subprocess.run([sys.executable, "manage.py", "shell", "-c", f"from django.contrib.auth.models import User; {create}"],
                           cwd=root, env=env, check=True, capture_output=True, timeout=300)
            web_command = h.procfile_command("web") if root == h.ROOT else next(
                line.partition(":")[2].strip() for line in (root / "Procfile").read_text().splitlines() if line.startswith("web:"))
            web = subprocess.Popen(["bash", "-c", web_command], cwd=root, env=env, start_new_session=True,
                                   stdout=open(work / "web.log", "wb"), stderr=subprocess.STDOUT)
            base = f"http://127.0.0.1:{port}"
            h.wait_until(lambda: timed_get(base, "/accounts/login/", 2)[0] == 200, 90, what="gunicorn")
            git = subprocess.run(["git", "log", "-1", "--format=%h"], cwd=root, capture_output=True, text=True).stdout.strip()
            figures = {"probe": args.probe, "root": str(root), "commit": git or None, "web_command": web_command,
                       "load_average": h.load_average()}
            if args.probe == "posts":
                figures.update(probe_posts(base, env, root, temp_dir, users))
            elif args.probe == "big":
                figures.update(probe_big(base, env, root, temp_dir, users[0], int(args.big_gb * 2**30)))
            else:
                figures.update(probe_slow(base, port, args.slow_seconds))
            log = (work / "web.log").read_text(errors="replace")
            figures["worker_timeouts_in_log"] = log.count("WORKER TIMEOUT")
            figures["load_average_after"] = h.load_average()
            h.report(figures, args.json)
    finally:
        if web is not None:
            h.stop(web)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
