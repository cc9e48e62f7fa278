"""galera_check: the health endpoint of a Galera member, what the service's router checks (as
Percona's clustercheck does for HAProxy): `GET /` answers 200 while the member is synced in a
primary component, or a donor of a state transfer (mariabackup's leaves it taking writes), 503
otherwise (joining, cut off from the others). A member that answers connections is not always one
that should take them.

Run by the mysql recipe beside its server, standard library only. The server is asked through
its unix socket (the member's client option file), at most every CACHE_S: the router checks twice
a second per port."""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CACHE_S = 0.2
SERVING = ("Synced", "Donor/Desynced")
QUERY = "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment', 'wsrep_cluster_status', 'wsrep_ready')"


class State:
    def __init__(self, client: str):
        self.client = client  # the client option file: the service user's credentials and the socket
        self.lock = threading.Lock()
        self.read_at = 0.0
        self.value: dict[str, str] = {}

    def get(self) -> dict[str, str]:
        with self.lock:
            if time.monotonic() - self.read_at >= CACHE_S:
                self.value = self._read()
                self.read_at = time.monotonic()
            return self.value

    def _read(self) -> dict[str, str]:
        argv = ["mariadb", f"--defaults-file={self.client}", "-N", "-B", "--connect-timeout=2"]
        try:
            done = subprocess.run(argv, input=QUERY, capture_output=True, text=True, timeout=3)
        except subprocess.TimeoutExpired:
            return {}
        return dict(line.split("\t", 1) for line in done.stdout.splitlines() if "\t" in line)


def serve(host: str, port: int, state: State) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            said = state.get()
            synced = (
                said.get("wsrep_local_state_comment") in SERVING
                and said.get("wsrep_cluster_status") == "Primary"
                and said.get("wsrep_ready") == "ON"
            )
            body = json.dumps({"state": said.get("wsrep_local_state_comment"), "synced": synced}).encode()
            self.send_response(200 if synced else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # twice a second per port: nothing worth a line
            pass

    ThreadingHTTPServer((host, port), Handler).serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)  # the member's my.cnf: marks the process as its
    parser.add_argument("--client", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    serve(args.host, args.port, State(args.client))


if __name__ == "__main__":
    main()
