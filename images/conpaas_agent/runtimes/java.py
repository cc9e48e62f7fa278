"""java: a WAR in a Tomcat 10 base (CATALINA_BASE) of its own per instance, at / of the service.

Debian's tomcat10-common gives CATALINA_HOME (the code); each instance has its own base in
``instances/<name>/tomcat`` (conf, temp, work) and runs the staged, unpacked WAR in place.
"""

from __future__ import annotations

import mimetypes
import os
import re
import signal
from xml.sax.saxutils import escape

from conpaas_common.wire import MAX_HEAP_MB, MIN_HEAP_MB

from .base import InstanceError, Recipe, Run, answers_http, installed, int_field, private_dir, render, write_config

CATALINA_HOME = "/usr/share/tomcat10"
JAVA = "/usr/bin/java"
# What catalina.sh opens on Java 17, so Tomcat's leak prevention can reach into the JDK.
ADD_OPENS = [
    f"--add-opens={module}=ALL-UNNAMED"
    for module in (
        "java.base/java.lang",
        "java.base/java.lang.reflect",
        "java.base/java.io",
        "java.base/java.util",
        "java.base/java.util.concurrent",
        "java.rmi/sun.rmi.transport",
    )
]
# Tomcat still starts, and answers 404 everywhere, when the application fails to.
_APPLICATION_FAILED = "startup failed due to previous errors"
_EXTENSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+_-]*$")


def mime_mappings() -> str:
    """conf/web.xml's <mime-mapping>s: Tomcat ships them in a web.xml Debian's tomcat10-common
    lacks; the node's /etc/mime.types (Python's mimetypes reads it) has them all."""
    mimetypes.init()
    lines = [
        f"  <mime-mapping><extension>{escape(ext[1:])}</extension><mime-type>{escape(kind)}</mime-type></mime-mapping>"
        for ext, kind in sorted(mimetypes.types_map.items())
        if _EXTENSION_RE.match(ext[1:])
    ]
    return "\n".join(lines)


def internal_proxies(addresses: list[str]) -> str:
    """RemoteIpValve's internalProxies, a Java regular expression matching exactly these addresses
    (dots as [.]: a template value holds no backslash)."""
    return "|".join(address.replace(".", "[.]") for address in addresses)


class Java(Recipe):
    name = "java"
    concurrency = 50  # the connector's maxThreads
    fields = frozenset({"heap_mb"})
    start_timeout = 120.0  # a JVM, then Tomcat, then the application's own start
    stop_signals = (signal.SIGTERM,)  # the JVM's shutdown hook stops Tomcat gracefully
    logs = ("instance.log", "access.log")

    def validate(self, body: dict) -> dict:
        return {"heap_mb": int_field(body, "heap_mb", MIN_HEAP_MB, MAX_HEAP_MB)}

    def start(self, run: Run) -> None:
        java = installed(JAVA, "java", self.name)
        home = CATALINA_HOME
        installed(os.path.join(home, "bin", "bootstrap.jar"), "Tomcat 10", self.name)
        base = run.path("tomcat")
        for name in ("conf", "logs", "temp", "work", "webapps"):
            private_dir(os.path.join(base, name))
        values = {
            "host": run.host,
            "port": run.port,
            "app": run.app,
            "dir": run.dir,
            "threads": self.concurrency,
            "proxies": internal_proxies(run.trusted_proxies()),
        }
        write_config(os.path.join(base, "conf", "server.xml"), render("tomcat-server.xml", values))
        web = render("tomcat-web.xml", {}, {"mime_mappings": mime_mappings()})
        write_config(os.path.join(base, "conf", "web.xml"), web)
        argv = [
            java,
            f"-Xmx{run.spec['heap_mb']}m",
            # One collector thread, the least memory: an instance shares a small node.
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={base}/temp",
            f"-Dcatalina.base={base}",
            f"-Dcatalina.home={home}",
            *ADD_OPENS,
            "-classpath",
            f"{home}/bin/bootstrap.jar:{home}/bin/tomcat-juli.jar",
            "org.apache.catalina.startup.Bootstrap",
            "start",
        ]
        run.spawn(argv, cwd=base)

    def ready(self, run: Run) -> bool:
        # Tomcat answers once every application started, or failed to.
        if not answers_http(run.host, run.port):
            return False
        log = run.log_since_start()
        if _APPLICATION_FAILED in log:
            # Tomcat's SEVERE lines say why; the stack traces around them would bury it.
            severe = [line for line in log.splitlines() if line.startswith("SEVERE:")]
            raise InstanceError(f"instance {run.name}: the web application did not start: {' '.join(severe[:10])}")
        return True
