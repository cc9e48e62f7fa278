"""The open-loop load generator of the tests and benchmarks (tests/load.py) keeps its schedule
through a change of rate."""

import http.server
import threading
import time

from tests.load import OpenLoop


class Quick(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_it_steps_from_one_rate_to_another():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quick)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        load = OpenLoop(f"http://127.0.0.1:{server.server_port}/", rate=40, timeout=5).start()
        time.sleep(1.0)
        switched = time.monotonic()
        load.set_rate(10)
        time.sleep(1.0)
        answers = load.stop()
    finally:
        server.shutdown()
        server.server_close()

    answers.sort(key=lambda a: a.sent)  # kept as they end
    before = [a for a in answers if a.sent < switched]
    after = [a for a in answers if a.sent >= switched]
    assert 36 <= len(before) <= 44, len(before)  # due every 25 ms for a second
    assert 8 <= len(after) <= 12, len(after)  # then every 100 ms
    # The request already waiting for its turn keeps it; the next ones follow the new rate.
    gaps = [b.sent - a.sent for a, b in zip(after[1:], after[2:], strict=False)]
    assert all(abs(gap - 0.1) < 1e-6 for gap in gaps), gaps
    assert {a.status for a in answers} == {200}
