"""A task that takes as long as it is told, for shutdown tests (loaded with `celery --include`)."""

import os
import time

import redis

from butterflysite.celery import app


@app.task(name="deploy_tests.slow")
def slow(key: str, seconds: float) -> None:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.rpush(key, f"start {os.getpid()}")
    time.sleep(seconds)
    client.rpush(key, f"done {os.getpid()}")
