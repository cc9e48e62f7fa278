"""HAProxy's files: where they live (``Paths``), the config and the map files."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

from conpaas_common.wire import CONSOLE_COOKIE_PREFIX

from ..metrics import LOG_FORMAT, LOG_SAMPLE
from ..platform_requests import HEALTH_CHECK

# Besides the checks, two connections refused or timed out in a row take a server down at once
# (it comes back at its next passing check): a killed instance refuses at once and, with its
# maxconn never reached, would otherwise draw every retry of its requests until its checks fail.
# A server that is down is checked every 100 ms (downinter): a new one, added down, takes requests
# about 0.1 s after it is added rather than 1 s (HAProxy 2.6.12: its first check runs downinter
# after `enable health`), and a failed one comes back as soon as it answers.
CHECK_OPTIONS = "check inter 1s downinter 100ms fall 2 rise 1 observe layer4 error-limit 2 on-error mark-down"
# With each server's maxconn at its instance's concurrency, a check waits behind at most the
# requests the instance's workers are serving (measured under 4x overload, 2 workers, 50 ms
# requests: 70-90 ms, against 1 s timeouts without maxconn). So an app whose requests take up
# to this long at full load still passes its checks; a hung instance is down within
# fall x (inter + this).
CHECK_TIMEOUT = 3
# How long a request may wait in a slot's queue for a free server before the router answers 503
# (counted: QUEUE_TIMEOUTS_VAR). Long enough for a burst to pass, short enough to answer.
QUEUE_TIMEOUT = 5
# Per slot backend, a process-wide counter of the requests answered 503 at the queue timeout
# (read with `get var`; a new worker starts it from 0 again, like its other counters).
QUEUE_TIMEOUTS_VAR = "proc.conpaas_queue_timeouts_{slot}"
# HAProxy's own 503: every instance busy for QUEUE_TIMEOUT, or none up. One answer for both: a
# rule that answers "none up" at once from `nbsrv eq 0` misread the servers for a moment after each
# seamless reload and refused requests the servers took (bench/swap_under_load).
BUSY_MESSAGE = (
    f"The service is busy or has no instance up: no instance took this request within {QUEUE_TIMEOUT} s."
    " Try again shortly."
)
NO_VERSION_BACKEND = "conpaas_noversion"
MAX_SOCKET_PATH = 97
# How many console cookies one request may carry before the router drops its Cookie header
# whole (a browser holds one per name and path; the console sets two).
CONSOLE_COOKIE_PASSES = 4


@dataclass(frozen=True)
class Paths:
    dir: str

    @property
    def config(self) -> str:
        return os.path.join(self.dir, "haproxy.cfg")

    @property
    def keys_map(self) -> str:
        return os.path.join(self.dir, "keys.map")

    @property
    def envs_map(self) -> str:
        return os.path.join(self.dir, "envs.map")

    @property
    def socket_dir(self) -> str:
        """Where the unix sockets live: beside the config, unless that path is too long for a
        socket address (HAProxy takes at most 97 bytes); then a short private directory."""
        if len(os.path.join(self.dir, "requests.sock").encode()) <= MAX_SOCKET_PATH:
            return self.dir
        digest = hashlib.sha256(os.path.abspath(self.dir).encode()).hexdigest()[:16]
        return os.path.join(tempfile.gettempdir(), f"conpaas-{digest}")

    @property
    def admin_socket(self) -> str:
        return os.path.join(self.socket_dir, "admin.sock")

    @property
    def master_socket(self) -> str:
        return os.path.join(self.socket_dir, "master.sock")

    @property
    def pidfile(self) -> str:
        return os.path.join(self.dir, "haproxy.pid")

    @property
    def request_log(self) -> str:
        return os.path.join(self.socket_dir, "requests.sock")

    @property
    def server_state(self) -> str:
        return os.path.join(self.dir, "server-state")

    @property
    def log(self) -> str:
        return os.path.join(self.dir, "haproxy.log")


def server_options(maxconn: int | None) -> str:
    """What follows a server's address, in the config and in `add server` alike."""
    return CHECK_OPTIONS + (f" maxconn {maxconn}" if maxconn else "")


def check_passes(status: int, expected: int | None) -> bool:
    """The health check's rule on an answer's status, as slot_backend renders it for HAProxy:
    the expected status, or without one any status below 500. The agent's own probe uses it."""
    return status == expected if expected is not None else status < 500


def slot_backend(slot: str, health_path: str, health_status: int | None = None) -> list[str]:
    """A slot backend's rules, without its servers."""
    counter = QUEUE_TIMEOUTS_VAR.format(slot=slot)
    expect = f"status {health_status}" if health_status is not None else "! rstatus ^5"
    return [
        f"backend {slot}",
        "    balance roundrobin",
        f"    option httpchk GET {health_path}",
        # Named, so the instances leave the checks out of their access logs (platform_requests.py).
        f"    http-check send hdr User-Agent {HEALTH_CHECK}",
        f"    http-check expect {expect}",
        # What HAProxy answers itself with 503: the queue timeout, every retry refused, no server up.
        f'    http-error status 503 content-type text/plain string "{BUSY_MESSAGE}" hdr Retry-After 1',
        # Counted as a queue timeout when no server took the request (an instance's own 503 has
        # one) and some server was up.
        f"    http-after-response set-var({counter}) var({counter},0),add(1) "
        "if { status 503 } !{ srv_id -m found } { nbsrv gt 0 }",
    ]


def render_map(entries: dict[str, str]) -> str:
    return "".join(f"{key} {value}\n" for key, value in sorted(entries.items()))


# What a client may send to tell an app who it is or how it came (X-Forwarded-For, -Proto, -Host
# and the headers frameworks read besides: Django's X-Forwarded-Port, gunicorn's -Ssl and
# -Protocol, nginx's X-Real-IP, RFC 7239's Forwarded): deleted, then the router's own set, so an
# app (and a runtime trusting its routers: runtimes/base.py trusted_proxies) can believe them.
FORWARDED_HEADERS = (
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Ssl",
    "X-Forwarded-Protocol",
    "X-Real-IP",
)


def forwarded_rules() -> list[str]:
    """Frontend rules giving the app the client's address, scheme and host, and nothing a client
    forged about them (del-header first: ``option forwardfor`` would append to the client's)."""
    return [
        *(f"    http-request del-header {name}" for name in FORWARDED_HEADERS),
        "    http-request set-header X-Forwarded-For %[src]",
        "    http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]",
        "    http-request set-header X-Forwarded-Host %[req.hdr(Host)] if { req.hdr(Host) -m found }",
    ]


def console_cookie_rules() -> list[str]:
    """Frontend rules that keep the console's cookies and the instances apart.

    HAProxy 2.6 deletes headers by name only, so each ``replace-header`` pass rewrites the
    Cookie header without one console cookie (the first one, then the last one after a
    separator); what is still there after the passes costs the whole header. An instance's
    ``Set-Cookie`` of a console cookie (also a nameless one, ``=conpaas_console_…``, which some
    browsers send back as that name) becomes an expired harmless cookie: one header cannot be
    deleted alone either, and an empty one would still be a header.
    """
    prefix = CONSOLE_COOKIE_PREFIX
    present = f"{{ req.hdr(Cookie) -m sub {prefix} }}"
    first = f"'^[[:blank:]]*{prefix}[^;]*;?[[:blank:]]*(.*)$' '\\1'"
    later = f"'^(.*[^[:blank:];])[[:blank:]]*;[[:blank:]]*{prefix}[^;]*(.*)$' '\\1\\2'"
    rules = []
    for _ in range(CONSOLE_COOKIE_PASSES):
        rules.append(f"    http-request replace-header Cookie {first} if {present}")
        rules.append(f"    http-request replace-header Cookie {later} if {present}")
    return [
        *rules,
        f"    http-request del-header Cookie if {{ req.fhdr(Cookie) -m reg '(^|;)[[:blank:]]*{prefix}' }}",
        "    http-request del-header Cookie "
        "if { req.fhdr_cnt(Cookie) eq 1 } { req.fhdr(Cookie) -m reg '^[[:blank:];]*$' }",
        f"    http-response replace-header Set-Cookie '^[[:blank:]]*=?[[:blank:]]*{prefix}.*$' "
        "'conpaas-refused=console-cookie; Path=/; Max-Age=0'",
    ]


def render_config(
    paths: Paths,
    http_bind: str,
    slot_count: int,
    slot_servers: dict[str, list[dict]],
    health_path: str = "/",
    health_status: int | None = None,
) -> str:
    """The whole haproxy.cfg: one frontend, the 503 backend and ``slot_count`` slot backends.

    ``slot_servers`` maps a slot name to its servers (``name``, ``address``, ``port``,
    ``maxconn``, and ``target`` where HAProxy connects: address:port or a unix socket), so a
    reload or a restart comes back with the servers the runtime API had added.
    """
    keys, envs = paths.keys_map, paths.envs_map
    lines = [
        "# Written by the ConPaaS agent; rewritten before every change. Do not edit.",
        "global",
        f"    stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners",
        f"    server-state-file {paths.server_state}",
        # One thread: on a small node HAProxy shares the cores with the instances, and a second
        # thread costs more CPU per request (cross-thread wakeups) than it brings.
        "    nbthread 1",
        # One datagram per LOG_SAMPLE requests to the agent (metrics.py: percentiles; the counts
        # come from HAProxy's counters); dropped when the agent is down.
        f"    log {paths.request_log} len 1024 sample 1:{LOG_SAMPLE} local0 info",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-keep-alive 10s",
        "    timeout http-request 10s",
        f"    timeout queue {QUEUE_TIMEOUT}s",
        f"    timeout check {CHECK_TIMEOUT}s",
        # A request whose server failed (refused the connection, or closed it unanswered: killed)
        # is tried again on another server; once sent, only if it cannot change anything (the
        # frontend's disable-l7-retry), since the server may have acted on it before it died.
        "    option redispatch",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "    load-server-state-from-file global",
        "",
        "frontend web",
        f"    bind {http_bind}",
        "    log global",
        "    option dontlognull",
        f'    log-format "{LOG_FORMAT}"',
        # Routing key: header, else query parameter, else cookie.
        "    http-request set-var(txn.qkey) url_param(conpaas-env)",
        "    http-request set-var(txn.key) req.hdr(X-Conpaas-Env) if { req.hdr(X-Conpaas-Env) -m found }",
        "    http-request set-var(txn.key) var(txn.qkey) if !{ var(txn.key) -m found } { var(txn.qkey) -m found }",
        "    http-request set-var(txn.key) req.cook(conpaas-env) "
        "if !{ var(txn.key) -m found } { req.cook(conpaas-env) -m found }",
        # keys.map: preview key -> environment; envs.map: environment -> slot backend.
        f"    http-request set-var(txn.env) var(txn.key),map({keys})",
        f"    http-request set-var(txn.slot) var(txn.env),map({envs})",
        # Unknown key, or an environment without a version: production, like no key at all.
        "    http-request set-var(txn.env) str(production) if !{ var(txn.slot) -m found }",
        f"    http-request set-var(txn.slot) var(txn.env),map({envs}) if !{{ var(txn.slot) -m found }}",
        # The app learns which environment serves this request (it follows swaps, where an
        # instance's CONPAAS_ENV is the one it was started for), never the preview key.
        "    http-request set-header X-Conpaas-Env %[var(txn.env)]",
        *forwarded_rules(),
        *console_cookie_rules(),
        "    http-request disable-l7-retry unless { method GET HEAD OPTIONS }",
        "    use_backend %[var(txn.slot)] if { var(txn.slot) -m found }",
        f"    default_backend {NO_VERSION_BACKEND}",
        "    http-response del-header X-Conpaas-Env",
        "    http-response set-header X-Conpaas-Env %[var(txn.env)] if !{ var(txn.env) -m str production }",
        # The query parameter sets the cookie, for any well-formed value (known or not, so
        # the answer reveals nothing); the regex keeps anything else out of the header.
        '    http-response add-header Set-Cookie "conpaas-env=%[var(txn.qkey)]; Path=/; HttpOnly; SameSite=Lax" '
        "if { var(txn.qkey) -m reg ^[A-Za-z0-9_-]{1,128}$ } !{ var(txn.qkey) -m str production }",
        '    http-response add-header Set-Cookie "conpaas-env=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0" '
        "if { var(txn.qkey) -m str production }",
        "",
        f"backend {NO_VERSION_BACKEND}",
        "    http-request return status 503 content-type text/plain "
        'string "No code version is deployed to production."',
    ]
    for index in range(slot_count):
        slot = f"slot{index}"
        lines += ["", *slot_backend(slot, health_path, health_status)]
        for server in sorted(slot_servers.get(slot, []), key=lambda s: s["name"]):
            target = server.get("target") or f"{server['address']}:{server['port']}"
            lines.append(f"    server {server['name']} {target} {server_options(server.get('maxconn'))}")
    return "\n".join(lines) + "\n"


def write_if_changed(path: str, content: str) -> bool:
    try:
        with open(path) as fh:
            if fh.read() == content:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        fh.write(content)
    os.replace(tmp, path)
    return True
