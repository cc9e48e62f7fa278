"""The nginx of an instance, shared by the runtimes that serve through one (php, static)."""

from __future__ import annotations

from .base import Run, as_root, installed, private_dir, render, write_config

NGINX = "/usr/sbin/nginx"
# Where nginx would put request bodies and upstream answers it buffers; all in the instance.
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def real_ip(run: Run) -> str:
    """The realip module's rules: $remote_addr (the access log, PHP's REMOTE_ADDR) is the client's
    address from X-Forwarded-For when a router sent the request (its single value: the router
    replaces the client's own), through the unix socket or from a router's address."""
    trusted = [*run.trusted_proxies(), "unix:"]
    lines = [f"    set_real_ip_from {address};" for address in trusted]
    return "\n".join([*lines, "    real_ip_header X-Forwarded-For;"]) + "\n"


def start_nginx(run: Run, runtime: str, server: str, values: dict, blocks: dict | None = None) -> None:
    """Render ``nginx.conf`` around the server block of template ``server`` and spawn nginx in
    the foreground, unprivileged: its pid file, logs and temporary files are the instance's."""
    nginx = installed(NGINX, "nginx", runtime)
    for name in TEMP_PATHS:
        private_dir(run.path("tmp", name))
    socket = f'        listen "unix:{run.socket}";\n' if run.socket else ""
    config = render(
        "nginx.conf",
        {"dir": run.dir, "listen": listen_address(run.host, run.port)},
        {
            "server": render(server, values, blocks),
            "user": "user root root;\n" if as_root() else "",
            "listen_socket": socket,
            "real_ip": real_ip(run),
        },
    )
    path = write_config(run.path("nginx.conf"), config)
    # -e: the log of nginx's own start, before it reads the config (else /var/log/nginx, root's).
    run.spawn([nginx, "-p", run.dir + "/", "-c", path, "-e", run.path("error.log")])
