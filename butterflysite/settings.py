"""Settings for butterflysite, read from the environment.

Two modes, chosen by DJANGO_ENV:
- "development" (the default): runs on one laptop with no servers: SQLite, an embedded
  filesystem Celery broker, media and broker files under ./var.
- "production": every secret and address comes from the environment (Heroku config vars);
  HTTPS-only cookies, HSTS and SSL redirect behind Heroku's proxy. `check --deploy` is clean.
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name, default=""):
    return os.environ.get(name, default)


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_list(name, default=()):
    value = os.environ.get(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


DJANGO_ENV = env_str("DJANGO_ENV", "development")
if DJANGO_ENV not in {"development", "production"}:
    raise ImproperlyConfigured("DJANGO_ENV must be 'development' or 'production'.")
PRODUCTION = DJANGO_ENV == "production"

DEBUG = env_bool("DJANGO_DEBUG", default=not PRODUCTION)

SECRET_KEY = env_str("DJANGO_SECRET_KEY") or env_str("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY in production.")
    SECRET_KEY = "development-only-insecure-key-never-use-in-production"

# Where this install keeps files it writes (SQLite, media, broker queue) by default.
VAR_DIR = Path(env_str("BUTTERFLYSITE_VAR_DIR", str(BASE_DIR / "var")))

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", default=[] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"]
)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "csp",
    "accounts",
    "classifier",
    "retraining",
    "suggestions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # Multipart requests over UPLOAD_MAX_REQUEST_BYTES: 413 before their body is read.
    "butterflysite.request_limits.RequestSizeLimitMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A NUL or other control character in a parameter: 400 with a message, not a database 500.
    "butterflysite.middleware.ControlCharacterMiddleware",
    # Content-Security-Policy (CONTENT_SECURITY_POLICY below), Permissions-Policy, no-store.
    "csp.middleware.CSPMiddleware",
    "butterflysite.middleware.PrivacyHeadersMiddleware",
    # Last, so it sees a view's database errors first: 503 + Retry-After instead of 500.
    "butterflysite.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "butterflysite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "butterflysite.wsgi.application"

# Database: DATABASE_URL (Heroku Postgres sets it), else SQLite under ./var.
DATABASES = {
    "default": dj_database_url.config(
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60 if PRODUCTION else 0),
        conn_health_checks=True,
        ssl_require=env_bool("DATABASE_SSL_REQUIRE", default=False),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web server and worker write the same file: wait for the lock rather than fail. A deferred
    # transaction that reads, then writes, cannot wait (SQLite answers "database is locked" at
    # once, to avoid a deadlock); IMMEDIATE takes the write lock at BEGIN, where the timeout
    # applies (docs/performance.md: bursts of 50 uploads lost 5-7 to 503s without it, none with).
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
    VAR_DIR.mkdir(parents=True, exist_ok=True)
# Test databases: butterflysite/settings_test.py.

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "classifier:gallery"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Static files: whitenoise serves compressed, hashed files from the web process.
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "staticfiles")))  # collectstatic writes here (at build)

# Media: uploaded photos are private. Locally they sit under ./var/media and are served only
# through views that check the owner; with AWS_STORAGE_BUCKET_NAME set they go to a private
# S3-compatible bucket and are shown through short-lived signed URLs.
MEDIA_ROOT = Path(env_str("DJANGO_MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"
# The Bucketeer add-on's variable names work too (BUCKETEER_BUCKET_NAME, ...).
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME") or env_str("BUCKETEER_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    AWS_S3_ACCESS_KEY_ID = env_str("AWS_ACCESS_KEY_ID") or env_str("BUCKETEER_AWS_ACCESS_KEY_ID") or None
    AWS_S3_SECRET_ACCESS_KEY = env_str("AWS_SECRET_ACCESS_KEY") or env_str("BUCKETEER_AWS_SECRET_ACCESS_KEY") or None
    AWS_S3_ENDPOINT_URL = env_str("AWS_S3_ENDPOINT_URL") or None
    AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME") or env_str("BUCKETEER_AWS_REGION") or None
    AWS_S3_SIGNATURE_VERSION = "s3v4"
    AWS_S3_ADDRESSING_STYLE = env_str("AWS_S3_ADDRESSING_STYLE") or None  # "path" for some S3-compatibles
    # Private objects: no ACL is sent, so the bucket's own (private) policy applies, and every
    # URL handed to a browser is signed and expires after AWS_QUERYSTRING_EXPIRE seconds.
    AWS_DEFAULT_ACL = None
    AWS_QUERYSTRING_AUTH = True
    AWS_QUERYSTRING_EXPIRE = env_int("AWS_QUERYSTRING_EXPIRE", 300)
    AWS_S3_FILE_OVERWRITE = False
    AWS_LOCATION = env_str("AWS_LOCATION", "")  # key prefix, to share one bucket between apps
    AWS_S3_OBJECT_PARAMETERS = {"CacheControl": "private, max-age=300"}
    DEFAULT_FILE_STORAGE_BACKEND = "storages.backends.s3.S3Storage"
else:
    if PRODUCTION and not env_bool("DJANGO_ALLOW_LOCAL_MEDIA"):
        # A dyno's filesystem is wiped on every restart: uploads there would silently vanish.
        raise ImproperlyConfigured(
            "Set AWS_STORAGE_BUCKET_NAME (and AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) in production: "
            "uploaded photos must live in object storage. DJANGO_ALLOW_LOCAL_MEDIA=true overrides this "
            "on a host with a persistent disk."
        )
    DEFAULT_FILE_STORAGE_BACKEND = "django.core.files.storage.FileSystemStorage"
STORAGES = {
    "default": {"BACKEND": DEFAULT_FILE_STORAGE_BACKEND},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# Uploads
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 10 * 1024 * 1024)
UPLOAD_MAX_FILES = env_int("UPLOAD_MAX_FILES", 20)
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 40_000_000)
DATA_UPLOAD_MAX_NUMBER_FILES = UPLOAD_MAX_FILES
# The one bound on a request that carries files (form or API): every file at its limit plus 1 MB
# for the multipart framing and form fields. butterflysite/request_limits.py enforces it from
# Content-Length before the body is read, and while streaming; its upload handler keeps at most
# UPLOAD_MAX_BYTES + 1 bytes of a file, in memory up to FILE_UPLOAD_MAX_MEMORY_SIZE, then in an
# anonymous temporary file in FILE_UPLOAD_TEMP_DIR that vanishes even if the worker is killed.
UPLOAD_MAX_REQUEST_BYTES = env_int("UPLOAD_MAX_REQUEST_BYTES", UPLOAD_MAX_BYTES * UPLOAD_MAX_FILES + 1024 * 1024)
FILE_UPLOAD_HANDLERS = ["butterflysite.request_limits.BoundedUploadHandler"]
FILE_UPLOAD_TEMP_DIR = env_str("FILE_UPLOAD_TEMP_DIR") or None
# What one user may store, counted from the sizes of their originals (Photo.size_bytes).
USER_STORAGE_QUOTA_BYTES = env_int("USER_STORAGE_QUOTA_BYTES", 1024 * 1024 * 1024)
# Stored photo files (originals/, display/, thumbnails/) that no photo row refers to and that are
# older than MEDIA_ORPHAN_GRACE_SECONDS are deleted every MEDIA_ORPHAN_SWEEP_INTERVAL_SECONDS
# (Celery beat; also `manage.py sweep_orphan_files`): left by a request killed between writing
# its files and committing its rows. The grace period covers uploads still in progress.
MEDIA_ORPHAN_GRACE_SECONDS = env_int("MEDIA_ORPHAN_GRACE_SECONDS", 3600)
MEDIA_ORPHAN_SWEEP_INTERVAL_SECONDS = env_int("MEDIA_ORPHAN_SWEEP_INTERVAL_SECONDS", 3600)
# Django's defaults, written out. They do not bound uploads (UPLOAD_MAX_REQUEST_BYTES does): the
# first refuses a request whose non-file fields exceed it, the second is how much of an uploaded
# file the handler keeps in memory before it goes to a temporary file.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# Machine learning: shipped model artifacts and where backbone weights may be found.
ML_ARTIFACTS_DIR = Path(env_str("ML_ARTIFACTS_DIR", str(BASE_DIR / "artifacts")))
# Models trained after deploy live in the default storage under this prefix (the bucket in
# production) and are copied once into this local cache before loading: see
# butterflysite/artifact_store.py and docs/deploy.md.
ML_ARTIFACTS_STORAGE_PREFIX = env_str("ML_ARTIFACTS_STORAGE_PREFIX", "artifacts")
ML_ARTIFACTS_CACHE_DIR = Path(env_str("ML_ARTIFACTS_CACHE_DIR", str(VAR_DIR / "artifact-cache")))
# The identifier (ml/identify.py: open-set model + fitted parameters) that turns the active
# models' predictions into one answer per photo. Without it photos keep their predictions only.
ML_IDENTIFIER_DIR = Path(env_str("ML_IDENTIFIER_DIR", str(BASE_DIR / "artifacts" / "identifier")))

# Celery: Redis when configured, else an embedded filesystem broker that needs no server.
REDIS_URL = env_str("REDIS_URL")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The worker looks for new task files this often (kombu's default, 1 s, adds half a
        # second to every upload's wait on average; docs/performance.md).
        "polling_interval": float(env_str("CELERY_BROKER_POLLING_INTERVAL", "0.1")),
    }
    for _folder in ("queue", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
# Heroku Key-Value Store hands out rediss:// URLs whose certificates are self-signed: encrypt,
# but do not verify the chain unless REDIS_SSL_CERT_REQS=required.
REDIS_SSL_CERT_REQS = env_str("REDIS_SSL_CERT_REQS", "none").lower()
if REDIS_SSL_CERT_REQS not in {"none", "optional", "required"}:
    raise ImproperlyConfigured("REDIS_SSL_CERT_REQS must be none, optional or required.")
if CELERY_BROKER_URL.startswith("rediss://"):
    import ssl

    CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": getattr(ssl, f"CERT_{REDIS_SSL_CERT_REQS.upper()}")}
# Dyno restarts send SIGTERM; the Procfile remaps it (REMAP_SIGTERM=SIGQUIT) to a soft shutdown:
# running tasks get this many seconds to finish (Heroku kills at 30), the rest are re-queued.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = float(env_str("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", "15"))
# Results live in the database (Prediction rows), not in a Celery result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A task is acknowledged only after it ran, and re-queued if its worker dies mid-way:
# classification is idempotent, so running twice is harmless, losing it is not.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One task at a time per pool process on Redis, so a worker busy with a batch leaves the other
# tasks to idle workers. The filesystem broker (one laptop worker) hands out one message per
# poll, so there the worker reserves a batch's worth at once: the tasks of photos a batch already
# classified then finish back to back instead of one per poll (docs/performance.md).
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER",
                                            16 if CELERY_BROKER_URL == "filesystem://" else 1)
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Worker pool children load TensorFlow and every active model before saying they are up.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env_int("CELERY_WORKER_PROC_ALIVE_TIMEOUT", 180)
# The queue classification tasks go to (tests give their worker a queue of its own).
CLASSIFIER_TASK_QUEUE = env_str("CLASSIFIER_TASK_QUEUE", "celery")
# A classify task also claims up to this many photos in all that are waiting, and runs each
# model once on the whole batch (docs/performance.md). 1 turns batching off. 4 keeps a worker at
# concurrency 1 within a 512 MB dyno and classifies as fast as 16 (docs/deploy.md, "Dyno sizes").
CLASSIFIER_BATCH_SIZE = max(1, env_int("CLASSIFIER_BATCH_SIZE", 4))
# A claim lapses after this many seconds, so the photos of a worker that died are taken over.
CLASSIFIER_CLAIM_SECONDS = env_int("CLASSIFIER_CLAIM_SECONDS", 120)
# A task whose photo another worker has claimed checks again after this many seconds.
CLASSIFIER_CLAIM_RECHECK_SECONDS = float(env_str("CLASSIFIER_CLAIM_RECHECK_SECONDS", "2"))
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# The sweep (Celery beat, every CLASSIFIER_SWEEP_INTERVAL_SECONDS; also `manage.py
# sweep_pending_photos`) sends the classify task again for photos pending longer than
# CLASSIFIER_SWEEP_PENDING_SECONDS: their task was lost (broker down at upload). docs/reliability.md
CLASSIFIER_SWEEP_PENDING_SECONDS = env_int("CLASSIFIER_SWEEP_PENDING_SECONDS", 300)
CLASSIFIER_SWEEP_INTERVAL_SECONDS = env_int("CLASSIFIER_SWEEP_INTERVAL_SECONDS", 60)
CELERY_BEAT_SCHEDULE_FILENAME = env_str("CELERY_BEAT_SCHEDULE_FILENAME", str(VAR_DIR / "celerybeat-schedule"))

# Retraining (docs/retraining.md): the base training data and the benchmark test set (the team's
# ../shared by default), where new versions are written (one new folder each), the feature cache
# every retrain shares, the held-out share of staff labels and the promotion rule's bounds.
_SHARED_DIR = BASE_DIR.parent / "shared"
RETRAIN_BASE_DATA_DIR = Path(env_str("RETRAIN_BASE_DATA_DIR", str(_SHARED_DIR / "data" / "butterflies50" / "train")))
RETRAIN_BENCHMARK_DIR = Path(env_str("RETRAIN_BENCHMARK_DIR", str(_SHARED_DIR / "data" / "butterflies50" / "test")))
RETRAIN_WEIGHTS_DIR = Path(env_str("RETRAIN_WEIGHTS_DIR", str(_SHARED_DIR / "weights")))
RETRAIN_OUTPUT_DIR = Path(env_str("RETRAIN_OUTPUT_DIR", str(ML_ARTIFACTS_DIR / "retrained")))
RETRAIN_CACHE_DIR = env_str("RETRAIN_CACHE_DIR") or env_str("ML_CACHE_DIR") or str(VAR_DIR / "feature-cache")
RETRAIN_HOLDOUT_FRACTION = float(env_str("RETRAIN_HOLDOUT_FRACTION", "0.25"))
# How far benchmark top-1 may fall (0.005: half a point), and the benchmark recall of a species
# the labels touch (0.15: 3 of 20 photos), before a promotion is refused.
RETRAIN_MAX_BENCHMARK_DROP = float(env_str("RETRAIN_MAX_BENCHMARK_DROP", "0.005"))
RETRAIN_MAX_CLASS_RECALL_DROP = float(env_str("RETRAIN_MAX_CLASS_RECALL_DROP", "0.15"))
# Retrains run on a queue of their own that only the trainer process consumes (Procfile `trainer`,
# scripts/run): a retrain never delays photos, and classification workers never load TensorFlow.
RETRAIN_TASK_QUEUE = env_str("RETRAIN_TASK_QUEUE") or "retrain"
# A running retrain writes its heartbeat every second or so while it trains or evaluates; one whose
# heartbeat is older than this many seconds lost its worker and is marked failed by a beat task
# (every RETRAIN_LOST_CHECK_INTERVAL seconds, in the classification worker). The bound covers the
# longest step without a check: saving the new model and checking its LiteRT export.
RETRAIN_HEARTBEAT_TIMEOUT = env_int("RETRAIN_HEARTBEAT_TIMEOUT", 300)
RETRAIN_LOST_CHECK_INTERVAL = env_int("RETRAIN_LOST_CHECK_INTERVAL", 60)
# A retrain still running after this many seconds is stopped and its run marked failed.
RETRAIN_SOFT_TIME_LIMIT = env_int("RETRAIN_SOFT_TIME_LIMIT", 3 * 3600)

# Cache: Redis in production (shared by all processes, needed for rate limits), else files.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    if REDIS_URL.startswith("rediss://"):
        CACHES["default"]["OPTIONS"] = {"ssl_cert_reqs": REDIS_SSL_CERT_REQS}
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            # Past MAX_ENTRIES (300 by default) the file cache deletes a third of its entries at
            # random, rate-limit counters included: a limit would then forget what it counted.
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# Rate limits (butterflysite/ratelimits.py): "count/period" (s, m, h, d) per client IP, per user
# or per username tried, counted in the default cache. An empty value turns that limit off.
RATELIMIT_ENABLE = env_bool("RATELIMIT_ENABLE", default=True)
RATELIMIT_LOGIN_IP = env_str("RATELIMIT_LOGIN_IP", "30/m")  # sign in (pages, admin, token), sign up
# Per client IP + username tried, never per username alone (that let anyone lock its owner out):
# a minute's window, then an hour's, so a guesser backs off further while the owner still signs in.
RATELIMIT_LOGIN_IP_USERNAME = env_str("RATELIMIT_LOGIN_IP_USERNAME", "10/m")
RATELIMIT_LOGIN_IP_USERNAME_HOURLY = env_str("RATELIMIT_LOGIN_IP_USERNAME_HOURLY", "30/h")
RATELIMIT_PASSWORD_RESET_IP = env_str("RATELIMIT_PASSWORD_RESET_IP", "5/h")  # reset emails asked for
RATELIMIT_EXPORT_USER = env_str("RATELIMIT_EXPORT_USER", "10/h")  # "download my data" zips
RATELIMIT_UPLOAD_IP = env_str("RATELIMIT_UPLOAD_IP", "120/m")  # upload requests (form or API)
RATELIMIT_UPLOAD_USER = env_str("RATELIMIT_UPLOAD_USER", "60/m")
# Behind Heroku's router the client is the last X-Forwarded-For entry, not REMOTE_ADDR.
RATELIMIT_TRUST_X_FORWARDED_FOR = env_bool("RATELIMIT_TRUST_X_FORWARDED_FOR", default=PRODUCTION)
RATELIMIT_IP_META_KEY = "butterflysite.ratelimits.client_ip"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Hashed tokens with an expiry, listed and revoked by their owner (accounts app, docs/api.md).
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON strings with a NUL or other control character: 400 with a message.
    "DEFAULT_PARSER_CLASSES": [
        "butterflysite.parsers.PlainTextJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "classifier.api.api_exception_handler",
}

# API tokens (django-rest-knox): only a SHA-512 digest is stored; each token expires after
# API_TOKEN_TTL_DAYS, is revoked by its owner (page or API), by POST /api/token/logout/, and
# with every other token of the user when the password changes.
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=env_int("API_TOKEN_TTL_DAYS", 30)),
    "TOKEN_LIMIT_PER_USER": env_int("API_TOKEN_LIMIT_PER_USER", 20),
    "AUTO_REFRESH": False,
}

# Email: password reset links. The console in development; SMTP from the environment in
# production (EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, EMAIL_HOST_PASSWORD, EMAIL_USE_TLS,
# DEFAULT_FROM_EMAIL). Without EMAIL_HOST in production there is no password reset at all.
EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=True)
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "butterflysite <noreply@localhost>")
PASSWORD_RESET_ENABLED = bool(EMAIL_HOST) or not PRODUCTION

# Content-Security-Policy (django-csp): scripts only from this site (no inline scripts, no
# on* handlers: static/js); styles may be inline (the admin's widths and bars). Photos in a
# bucket are shown through signed URLs on its endpoint, so images may come from there.
def _origin(url):
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else None


CSP_IMAGE_SOURCES = ["'self'", "data:"]
if AWS_STORAGE_BUCKET_NAME:
    if AWS_S3_ENDPOINT_URL:
        CSP_IMAGE_SOURCES.append(_origin(AWS_S3_ENDPOINT_URL))
        _endpoint = AWS_S3_ENDPOINT_URL.split("://", 1)
        CSP_IMAGE_SOURCES.append(f"{_endpoint[0]}://{AWS_STORAGE_BUCKET_NAME}.{_endpoint[1].split('/')[0]}")
    else:
        CSP_IMAGE_SOURCES += [f"https://{AWS_STORAGE_BUCKET_NAME}.s3.amazonaws.com", "https://*.amazonaws.com"]
CSP_IMAGE_SOURCES += env_list("CSP_EXTRA_IMAGE_SOURCES")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": CSP_IMAGE_SOURCES,
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
# Features this site never uses, turned off for every page (butterflysite.middleware).
PERMISSIONS_POLICY = "camera=(), microphone=(), geolocation=(), payment=(), usb=()"

# Security: strict in production, where Heroku's router terminates TLS.
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
