"""Gunicorn for the web dyno (Procfile: `gunicorn butterflysite.wsgi --config gunicorn.conf.py`).

Threaded workers (gthread), so a few slow clients cannot starve the site: a sync worker is held
for the whole of one request, and two clients sending a byte every 2 s held both sync workers
(a normal page then waited 19-27 s). A gthread worker gives each request a thread (and hands a
connection that sends nothing for 5 s back to its main loop); slow clients hold a thread each,
and the other threads keep serving. Figures before and after: docs/reliability.md ("Slow clients").

Every value can be overridden from the environment (Heroku config vars).
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# Processes per dyno: about 120 MB each (the web never loads TensorFlow).
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
# Requests served at once per process. Each thread may hold a database connection
# (DATABASE_CONN_MAX_AGE), so workers x threads per web dyno count against the database's limit.
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# A worker whose main loop stops answering for this long is restarted (with gthread a long
# request does not count: it runs in a thread while the main loop keeps beating).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "25"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
# No keep-alive: a connection carries one request. An upload refused from its Content-Length
# (butterflysite/request_limits.py) is answered without reading its body; reusing the
# connection would make gunicorn read and discard that whole body before the next request.
keepalive = 0
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "100"))
accesslog = "-"
