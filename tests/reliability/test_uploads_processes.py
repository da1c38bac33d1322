"""Uploads and slow clients against the Procfile's web command (gunicorn with gunicorn.conf.py),
a real process spoken to over loopback: slow clients do not starve it, an oversized upload is
refused from its Content-Length without its body being read or stored, and a worker killed in the
middle of an upload leaves no temporary file behind."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.request

import pytest

from scripts import harness

pytestmark = [pytest.mark.reliability, pytest.mark.slow]


@pytest.fixture
def web(tmp_path):
    """The Procfile's web command (development settings, no database needed by these requests),
    its upload temporary files in a folder of the test's own."""
    temp_dir = tmp_path / "upload-tmp"
    temp_dir.mkdir()
    port = harness.free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "butterflysite.settings",
        "DJANGO_ENV": "development",
        "DJANGO_DEBUG": "false",
        "BUTTERFLYSITE_VAR_DIR": str(tmp_path / "var"),
        "FILE_UPLOAD_TEMP_DIR": str(temp_dir),
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port}",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{harness.VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_TEST_DATABASE_NAME"):
        env.pop(name, None)
    log = tmp_path / "web.log"
    process = harness.start("web", env, log)
    base = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            return urllib.request.urlopen(base + "/accounts/login/", timeout=2).status == 200
        except OSError:
            return False

    harness.wait_until(up, 60, what="gunicorn")
    yield {"base": base, "port": port, "temp_dir": temp_dir, "process": process, "log": log}
    harness.stop(process, signal.SIGKILL)


def _page_seconds(base: str) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(base + "/accounts/login/", timeout=30) as response:
        assert response.status == 200
    return time.monotonic() - started


def _drip(port: int, seconds: float):
    """A client sending its request one byte every 2 s."""
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for byte in b"POST /accounts/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X" * 1000:
            if time.monotonic() >= deadline:
                return
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                return
            time.sleep(2)


def test_two_slow_clients_do_not_starve_a_normal_page(web):
    # Before (2 sync workers) the page waited for the worker timeout: 19-27 s.
    drips = [threading.Thread(target=_drip, args=(web["port"], 14), daemon=True) for _ in range(2)]
    for drip in drips:
        drip.start()
    time.sleep(3)  # both connections open and sending
    seconds = [_page_seconds(web["base"]) for _ in range(8)]
    assert max(seconds) < 2, seconds
    for drip in drips:
        drip.join(30)
    assert "WORKER TIMEOUT" not in web["log"].read_text()


def test_an_oversized_upload_is_refused_before_its_body_is_read(web):
    # Claims 1 GiB, sends 64 KB of it: the answer comes at once, and nothing reaches the disk.
    with socket.create_connection(("127.0.0.1", web["port"]), timeout=30) as sock:
        sock.sendall(b"POST /api/photos/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n"
                     + f"Content-Length: {2**30}\r\n\r\n".encode() + b"--x\r\n" + b"\xff" * 65536)
        started, answer = time.monotonic(), b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        assert time.monotonic() - started < 5
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"The upload is larger than 201 MB in all" in answer
    assert list(web["temp_dir"].iterdir()) == []
    assert _page_seconds(web["base"]) < 2


def _deleted_files_open_in(pids, folder) -> list[str]:
    found = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        found += [link for link in links if link.startswith(str(folder)) and link.endswith("(deleted)")]
    return found


def test_a_worker_killed_mid_upload_leaves_no_temporary_file(web):
    # 6 MB of a photo sent (over FILE_UPLOAD_MAX_MEMORY_SIZE, so it is on disk), then the worker
    # holding it is SIGKILLed: its temporary file never had a name, so nothing is left.
    boundary = "x"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", web["port"]), timeout=30) as sock:
        # With a CSRF cookie the CSRF check reads the body (looking for the form's token) before
        # it refuses the request: the upload handler receives the file.
        sock.sendall(b"POST /upload/ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: csrftoken=" + b"a" * 32 + b"\r\n"
                     + f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
                     + f"Content-Length: {len(head) + 9 * 2**20}\r\n\r\n".encode() + head + b"\xab" * (6 * 2**20))
        workers = [pid for pid in harness.descendants(web["process"].pid) if pid != web["process"].pid]
        held = harness.wait_until(lambda: _deleted_files_open_in(workers, web["temp_dir"]), 20,
                                  what="a worker holding the upload in a temporary file")
        assert list(web["temp_dir"].iterdir()) == [], "the temporary file should have no name"
        holder = next(pid for pid in workers if _deleted_files_open_in([pid], web["temp_dir"]))
        os.kill(holder, signal.SIGKILL)
    time.sleep(1)
    assert held and list(web["temp_dir"].iterdir()) == []
    harness.wait_until(lambda: _page_seconds(web["base"]) < 2, 30, what="the site answering after the kill")
