"""ConPaaS settings: environment variables with embedded defaults (docs/design.md, Running contract)."""

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

from conpaas_common.wire import CONSOLE_COOKIE_PREFIX

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str = "False") -> bool:
    return os.getenv(name, default).strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    return int(os.getenv(name) or default)


def envfloat(name: str, default: float) -> float:
    return float(os.getenv(name) or default)


# Nothing the control plane writes is for other users: the database, the secret key, the
# archives (tenant code runs as other users on isolated nodes). Nodes have homes of their own.
os.umask(0o077)
CONPAAS_HOME = Path(os.getenv("CONPAAS_HOME", BASE_DIR / "var")).resolve()
CONPAAS_HOME.mkdir(parents=True, exist_ok=True)
if CONPAAS_HOME.stat().st_uid == os.geteuid():
    CONPAAS_HOME.chmod(0o700)  # also an installation made before this rule


def _installation_secret() -> str:
    """One random secret per CONPAAS_HOME, so the embedded defaults are never a shared secret."""
    path = CONPAAS_HOME / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(get_random_secret_key())
    return path.read_text().strip()


SECRET_KEY = os.getenv("CONPAAS_SECRET_KEY") or _installation_secret()
DEBUG = envbool("CONPAAS_DEBUG")
ALLOWED_HOSTS = os.getenv("CONPAAS_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

# Where nodes download code versions from: the control plane's own address as nodes see it.
# `manage.py up` sets it from --bind when it is not given.
CONPAAS_URL = os.getenv("CONPAAS_URL", "http://127.0.0.1:8000").rstrip("/")
CONPAAS_CLOUD = os.getenv("CONPAAS_CLOUD", "local")


def _apps_domain(value: str) -> str:
    """CONPAAS_APPS_DOMAIN, checked at start: a bad one would only show later as broken links."""
    domain = value.strip().strip(".").lower()
    label = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
    # Room for the service's own label (63) and its dot within a host name's 253 characters.
    if domain and (len(domain) > 253 - 64 or not re.fullmatch(rf"{label}(\.{label})*", domain)):
        raise ImproperlyConfigured(f"CONPAAS_APPS_DOMAIN is not a DNS domain name: {value!r}")
    return domain


# Empty: a service's URL is its router's address. Set (with a wildcard DNS record for it): each
# service gets a host name of its own, <service>-<owner>.<domain> (services.models.host_label).
CONPAAS_APPS_DOMAIN = _apps_domain(os.getenv("CONPAAS_APPS_DOMAIN", ""))
CONPAAS_ARCHIVES = CONPAAS_HOME / "archives"
CONPAAS_NODES = CONPAAS_HOME / "nodes"
# Builds (versions/builds.py): what a code version needs besides its archive (its python
# packages, a composer vendor/), made once in a sandbox and stored by their inputs' digest.
CONPAAS_BUILDS = CONPAAS_HOME / "builds"
CONPAAS_BUILD_TIMEOUT = envint("CONPAAS_BUILD_TIMEOUT", 1800)
# The package proxy, a build's only way out: a PyPI caching mirror (proxpi) that `manage.py up`
# runs on a free port of 127.0.0.1 and names here for its workers; set it to use one of your own.
CONPAAS_PACKAGE_PROXY_URL = os.getenv("CONPAAS_PACKAGE_PROXY_URL", "")
CONPAAS_PACKAGE_CACHE = Path(os.getenv("CONPAAS_PACKAGE_CACHE", str(CONPAAS_HOME / "package-cache")))
CONPAAS_PACKAGE_CACHE_MB = envint("CONPAAS_PACKAGE_CACHE_MB", 5120)
# The local cloud isolates each node (its own Unix user, network namespace and cgroups) when
# the platform runs as root: "auto" (isolate when possible, else say why once at start-up),
# "required" (refuse to boot nodes that cannot be isolated) or "off". See README, "Isolation".
CONPAAS_LOCAL_ISOLATION = os.getenv("CONPAAS_LOCAL_ISOLATION", "auto")
CONPAAS_LOCAL_NODE_ROOT = Path(os.getenv("CONPAAS_LOCAL_NODE_ROOT", "/var/lib/conpaas/nodes"))
CONPAAS_LOCAL_NETWORK = os.getenv("CONPAAS_LOCAL_NETWORK", "10.77.0.0/16")
# Isolated nodes reach the control plane at their bridge's gateway (it forwards to CONPAAS_URL).
ALLOWED_HOSTS.append(str(ipaddress.ip_network(CONPAAS_LOCAL_NETWORK).network_address + 1))
# Routers reachable from other machines at this host name or address, each on a port of its own
# (empty: from this machine only). See README, "Isolation".
CONPAAS_LOCAL_PUBLISH = os.getenv("CONPAAS_LOCAL_PUBLISH", "")
CONPAAS_LOCAL_CPU_SHARES = envint("CONPAAS_LOCAL_CPU_SHARES", 512)  # the platform's processes have 1024
CONPAAS_LOCAL_MEMORY_MB = envint("CONPAAS_LOCAL_MEMORY_MB", 2048)
CONPAAS_LOCAL_PIDS = envint("CONPAAS_LOCAL_PIDS", 1024)
# Fault injection in the local cloud (README, Settings): the fraction of node creations that
# fail, and seconds added to every boot, so tests and users can watch the retries work.
CONPAAS_LOCAL_FAIL_RATE = envfloat("CONPAAS_LOCAL_FAIL_RATE", 0)
if not 0 <= CONPAAS_LOCAL_FAIL_RATE <= 1:
    raise ImproperlyConfigured(f"CONPAAS_LOCAL_FAIL_RATE is a fraction from 0 to 1, not {CONPAAS_LOCAL_FAIL_RATE}")
CONPAAS_LOCAL_BOOT_DELAY = envfloat("CONPAAS_LOCAL_BOOT_DELAY", 0)
# How long a deploy waits for the new instances to pass their health checks.
CONPAAS_HEALTH_TIMEOUT = envint("CONPAAS_HEALTH_TIMEOUT", 60)
# An instance whose app answers every health check with the same error status for this long
# (about 20 checks: a router checks a down server every 100 ms) fails the deploy at once rather
# than at the timeout; long enough for an app that answers 503 while it warms up.
CONPAAS_HEALTH_FAIL_AFTER = envfloat("CONPAAS_HEALTH_FAIL_AFTER", 2.5)
CONPAAS_BOOT_TIMEOUT = envint("CONPAAS_BOOT_TIMEOUT", 300)
# How long a preview database copy waits for a dump still loading into the database it copies.
CONPAAS_LOAD_WAIT = envint("CONPAAS_LOAD_WAIT", 1800)
# A node creation that fails is tried again, CONPAAS_BOOT_ATTEMPTS times in all, waiting
# CONPAAS_BOOT_BACKOFF seconds after the first failure and twice as long after each next one.
CONPAAS_BOOT_ATTEMPTS = envint("CONPAAS_BOOT_ATTEMPTS", 3)
CONPAAS_BOOT_BACKOFF = envfloat("CONPAAS_BOOT_BACKOFF", 2)
CONPAAS_DRAIN_TIMEOUT = envint("CONPAAS_DRAIN_TIMEOUT", 30)
# How often the workers ask the routers of every running service for its health (seconds); the
# console shows what they saved, and how long ago (workflows.tasks.refresh_running_health).
CONPAAS_HEALTH_REFRESH = envint("CONPAAS_HEALTH_REFRESH", 20)
# Self-healing (workflows/healing.py): how often the workers check every running node's agent
# (seconds; 0 turns it off), and how long an agent may not answer, while its cloud still says
# the node runs, before the node counts as dead and is replaced.
CONPAAS_HEAL_INTERVAL = envint("CONPAAS_HEAL_INTERVAL", 5)
CONPAAS_HEAL_GRACE = envint("CONPAAS_HEAL_GRACE", 60)
# How often the workers save each running service's metrics (routing/metrics.py) and, where it
# is on, let the autoscaler decide (workflows/autoscale.py).
CONPAAS_METRICS_INTERVAL = envint("CONPAAS_METRICS_INTERVAL", 5)
CONPAAS_MAX_UPLOAD_MB = envint("CONPAAS_MAX_UPLOAD_MB", 100)
# Backups of data services (workflows/backups.py, README "Backups and restore"): the operator's
# S3 store they go to. Unset: the platform's own backup store, which `manage.py up` runs
# (services/platform_store.py), unless CONPAAS_BACKUP_STORE=off (then there are no backups).
CONPAAS_BACKUP_STORE = os.getenv("CONPAAS_BACKUP_STORE", "on").strip().lower()
if CONPAAS_BACKUP_STORE not in ("on", "off"):
    raise ImproperlyConfigured(f"CONPAAS_BACKUP_STORE is on or off, not {CONPAAS_BACKUP_STORE!r}")
CONPAAS_BACKUP_S3_ENDPOINT = os.getenv("CONPAAS_BACKUP_S3_ENDPOINT", "")
CONPAAS_BACKUP_S3_BUCKET = os.getenv("CONPAAS_BACKUP_S3_BUCKET", "")
CONPAAS_BACKUP_S3_ACCESS_KEY = os.getenv("CONPAAS_BACKUP_S3_ACCESS_KEY", "")
CONPAAS_BACKUP_S3_SECRET_KEY = os.getenv("CONPAAS_BACKUP_S3_SECRET_KEY", "")
CONPAAS_BACKUP_S3_REGION = os.getenv("CONPAAS_BACKUP_S3_REGION", "us-east-1")
# The longest a PostgreSQL server waits before archiving a WAL segment that is not full: the
# most a restore after the node's loss can lose (the RPO), seconds.
CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S = envint("CONPAAS_BACKUP_ARCHIVE_TIMEOUT_S", 60)
# How often the supervisor looks for data services whose last backup is older than their policy's
# every_hours (seconds).
CONPAAS_BACKUP_CHECK_INTERVAL = envint("CONPAAS_BACKUP_CHECK_INTERVAL", 30)
# What an uploaded archive may hold (images/conpaas_common/archives/). Archive bombs are
# stopped by bytes, the expanded size and the ratio; the member count only bounds the work of
# checking one (MediaWiki has 25,000 members, Nextcloud or Drupal with vendor/ more). A node
# unpacks at most 2 GB of a version's archive (conpaas_agent.instances.MAX_UNPACKED_BYTES).
CONPAAS_ARCHIVE_MAX_MEMBERS = envint("CONPAAS_ARCHIVE_MAX_MEMBERS", 200_000)
CONPAAS_ARCHIVE_MAX_EXPANDED_MB = envint("CONPAAS_ARCHIVE_MAX_EXPANDED_MB", 1024)
CONPAAS_ARCHIVE_MAX_RATIO = envfloat("CONPAAS_ARCHIVE_MAX_RATIO", 100.0)
if not 0 < CONPAAS_ARCHIVE_MAX_EXPANDED_MB <= 2048:
    raise ImproperlyConfigured(
        f"CONPAAS_ARCHIVE_MAX_EXPANDED_MB is 1 to 2048 (what a node unpacks), not {CONPAAS_ARCHIVE_MAX_EXPANDED_MB}"
    )
if CONPAAS_ARCHIVE_MAX_MEMBERS < 1 or CONPAAS_ARCHIVE_MAX_RATIO < 1:
    raise ImproperlyConfigured("CONPAAS_ARCHIVE_MAX_MEMBERS and CONPAAS_ARCHIVE_MAX_RATIO are at least 1")
# Per-user quotas; an operator overrides them for one user in the admin (services.Quota).
CONPAAS_QUOTA_SERVICES = envint("CONPAAS_QUOTA_SERVICES", 20)
CONPAAS_QUOTA_NODES = envint("CONPAAS_QUOTA_NODES", 40)  # all the user's services together
CONPAAS_QUOTA_ENVIRONMENTS = envint("CONPAAS_QUOTA_ENVIRONMENTS", 10)  # per service
CONPAAS_QUOTA_STORAGE_MB = envint("CONPAAS_QUOTA_STORAGE_MB", 2048)  # stored archives
# A running operation holds a lease its worker renews every third of it; `manage.py up` fails an
# operation whose lease ran out (its worker was killed, or its machine went away), seconds.
CONPAAS_OPERATION_LEASE = envint("CONPAAS_OPERATION_LEASE", 30)
# Operations of one user running at once; the next ones wait (pending) until one ends. Below
# CONPAAS_WORKERS, so that one user's slow deploys never hold every task worker.
CONPAAS_USER_OPERATIONS = envint("CONPAAS_USER_OPERATIONS", 2)
# The task that runs an operation: named here so the lowest layer (services.operations) can
# queue it without importing the workflows layer above it.
CONPAAS_OPERATION_TASK = "workflows.tasks.run_operation"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "services",
    "versions",
    "routing",
    "workflows",
    "console",
]

MIDDLEWARE = [
    # A Content-Length over the upload limit is answered 413 before anything reads the body.
    "conpaas_site.middleware.UploadLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Django's, answering an upload refused while it looks for its token in the body.
    "conpaas_site.middleware.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: turns a sign-in refused by a lockout into the 429 of
    # conpaas_site.signin.lockout_response, on the token endpoint, the console and the admin alike.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "conpaas_site.urls"
# `check --deploy` looks for Django's CSRF middleware by name; ours is that class, subclassed.
SILENCED_SYSTEM_CHECKS = ["security.W003"]

# The web console signs users in and out with django.contrib.auth (console/urls.py).
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:dashboard"
LOGOUT_REDIRECT_URL = "console:login"

# The console's cookies have names of their own, all starting with CONSOLE_COOKIE_PREFIX
# (`conpaas_console_`): browsers share cookies between ports of one host, so an app on a local
# node would otherwise receive the console's session, or sign its user out by setting a
# `sessionid` of its own. Every router strips these names from requests and refuses them in
# instances' Set-Cookie (images/conpaas_agent/router/config.py, console_cookie_rules).
SESSION_COOKIE_NAME = f"{CONSOLE_COOKIE_PREFIX}session"
CSRF_COOKIE_NAME = f"{CONSOLE_COOKIE_PREFIX}csrf"
LANGUAGE_COOKIE_NAME = f"{CONSOLE_COOKIE_PREFIX}language"
# The console's JavaScript never reads the CSRF cookie (forms carry the token), so scripts of an
# app on the same host cannot read it either.
CSRF_COOKIE_HTTPONLY = True
# Messages ride in the session: the cookie storage would add a `messages` cookie apps receive.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

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

WSGI_APPLICATION = "conpaas_site.wsgi.application"

# DATABASE_URL=postgres://user:password@host:port/name (psycopg 3) for production; SQLite by default.
DATABASES = {
    "default": dj_database_url.parse(
        os.getenv("DATABASE_URL") or f"sqlite:///{CONPAAS_HOME / 'conpaas.sqlite3'}",
        # Web threads and task workers keep their connection a minute, and check it before reuse:
        # a restarted PostgreSQL costs one reconnect, not a failed request or operation.
        conn_max_age=60,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the task workers write concurrently: WAL lets readers go on while one
    # writes, and IMMEDIATE transactions wait for the lock instead of failing on upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# Sign-in throttling (django-axes) on every password sign-in: the API's token endpoint, the
# console and the admin. CONPAAS_LOGIN_FAILURES wrong passwords for one account (from anywhere)
# or from one address (for any accounts) within CONPAAS_LOGIN_COOLOFF seconds lock that account or
# address until CONPAAS_LOGIN_COOLOFF seconds after the last of them: answered 429 with Retry-After,
# the right password included. Locked-out tries are not counted, so they do not extend the lock.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out sign-in before any password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("CONPAAS_LOGIN_FAILURES", 10)
AXES_COOLOFF_TIME = timedelta(seconds=envint("CONPAAS_LOGIN_COOLOFF", 900))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each on its own: per account, and per address
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True  # only that account's failures from that address (conpaas_site.signin)
AXES_HANDLER = "conpaas_site.signin.SigninAttempts"
AXES_LOCKOUT_CALLABLE = "conpaas_site.signin.lockout_response"
# The address is the connection's (REMOTE_ADDR): gunicorn serves clients directly, and a
# forwarded-for header is the client's to write.
AXES_CLIENT_IP_CALLABLE = "conpaas_site.signin.client_address"
# Failed attempts are what the lockout needs; a row per successful sign-in would only grow.
AXES_DISABLE_ACCESS_LOG = True
# Masked in the failed attempts' stored form data (shown in the admin) and in axes' log lines;
# axes masks `password` itself.
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "csrfmiddlewaretoken"]

# API tokens (django-rest-knox): stored as a SHA-512 digest, never in clear, each expiring
# CONPAAS_TOKEN_TTL_DAYS after it was issued; revoked by `conpaas logout`, by the user (API,
# CLI, console) and by any change of the user's password (services.tokens).
CONPAAS_TOKEN_TTL_DAYS = envint("CONPAAS_TOKEN_TTL_DAYS", 30)
KNOX_TOKEN_MODEL = "services.ApiToken"  # knox's own, plus an integer id and the time of last use
# knox's migrations would create the table of its default model, which nothing uses once it is
# replaced, and which blocks `flush` on PostgreSQL (it references the users' table).
MIGRATION_MODULES = {"knox": None}
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=CONPAAS_TOKEN_TTL_DAYS),
    "AUTH_HEADER_PREFIX": "Token",  # docs/design.md, REST API contract: `Authorization: Token <key>`
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = CONPAAS_HOME / "static"
STATIC_ROOT.mkdir(exist_ok=True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Uploads bigger than this go to a temporary file; they are validated before they are stored.
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 2**20
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 2**20
# The first handler refuses a file from nobody signed in, and cuts off files over
# CONPAAS_MAX_UPLOAD_MB while they stream (deleting the temporary file); the others keep the bytes.
FILE_UPLOAD_HANDLERS = [
    "versions.uploads.UploadLimitHandler",
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Request bodies are JSON, as the contract says (uploads: multipart, api/views/). A form body
    # reads an empty field as a missing one (DRF's rule for HTML forms), so `environment=` would
    # quietly swap development: answered 415 instead.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    # /api/docs/ from our own static files, not a CDN: a self-hosted platform may have no internet.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "TITLE": "ConPaaS API",
    "DESCRIPTION": "Blue-green deployment and development staging.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get their own components (ServiceRequest: name, runtime) apart from what is answered.
    "COMPONENT_SPLIT_REQUEST": True,
    # The user-facing API only: the nodes' archive download stays out (api/openapi.py).
    "PREPROCESSING_HOOKS": ["api.openapi.public_api_only"],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "api.openapi.declare_unauthorized"],
    # Operation ids (v1_services_list …) are derived from the path after this prefix: kept stable.
    "SCHEMA_PATH_PREFIX": "/api",
    # Three models have a `state`: each its own enum, by name.
    "ENUM_NAME_OVERRIDES": {
        "ServiceStateEnum": "services.choices.ServiceState",
        "NodeStateEnum": "services.choices.NodeState",
        "OperationStateEnum": "services.choices.OperationState",
    },
}

# django-q2 on the ORM broker of the default database; Redis when scaled out (docs/design.md, Architecture).
Q_CLUSTER = {
    # The queue's name: installations sharing one Redis keep apart by giving each its own.
    "name": os.getenv("CONPAAS_QUEUE_NAME") or "conpaas",
    # Operations mostly wait on nodes (a pip install, a boot, a health check): four workers cost
    # memory, not CPU, and leave two free when one user runs CONPAAS_USER_OPERATIONS at once.
    "workers": envint("CONPAAS_WORKERS", 4),
    # A worker is killed after `timeout`; operations end well before (boot, health and drain
    # waits are bounded), and `retry` must exceed it so a task is never run twice at once.
    "timeout": 6 * 3600,
    "retry": 6 * 3600 + 600,
    "max_attempts": 1,
    # How often idle workers look for new tasks in the database: a deploy starts within this,
    # and polling less leaves more CPU to the web server on small machines.
    "poll": 0.25,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    "label": "Tasks",
    # django-q2 logs two lines per task at INFO, and the health timer queues one every
    # CONPAAS_HEALTH_REFRESH seconds; operations have their own log (conpaas.events) and Events.
    "log_level": os.getenv("CONPAAS_TASK_LOG_LEVEL", "WARNING"),
}
if os.getenv("CONPAAS_REDIS_URL"):
    # redis://[:password@]host:port/db, rediss:// (TLS) or unix:///path?db=N; redis-py parses it.
    Q_CLUSTER["redis"] = os.getenv("CONPAAS_REDIS_URL")
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "conpaas": {"handlers": ["console"], "level": os.getenv("CONPAAS_LOG_LEVEL", "INFO")},
    },
}
