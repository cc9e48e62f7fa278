"""The CLI's pieces that need no server: tables, the progress line, API error messages, the config file."""

import io
import os
import stat

import requests

from conpaas_cli import config
from conpaas_cli.client import error_message
from conpaas_cli.commands import operations
from conpaas_cli.output import Progress, symbol, table


class Terminal(io.StringIO):
    def __init__(self, tty: bool, encoding: str = "utf-8"):
        super().__init__()
        self.tty, self._encoding = tty, encoding

    def isatty(self) -> bool:
        return self.tty

    @property
    def encoding(self) -> str:
        return self._encoding


def response(status: int, body: bytes) -> requests.Response:
    answer = requests.Response()
    answer.status_code, answer._content, answer.reason = status, body, "Conflict"
    return answer


def test_it_aligns_table_columns_without_trailing_blanks():
    out = io.StringIO()
    table(["id", "name", "url"], [[1, "shop", None], [12, "a", "http://x/"]], out)

    assert out.getvalue().splitlines() == ["ID  NAME  URL", "1   shop  -", "12  a     http://x/"]


def test_it_rewrites_the_progress_line_on_a_terminal():
    out = Terminal(tty=True)
    progress = Progress(out)
    progress.show("deploy #1: queued")
    progress.show("deploy #1: queued")
    progress.show("deploy #1: routing")
    progress.done()

    assert out.getvalue() == "\r\x1b[Kdeploy #1: queued\r\x1b[Kdeploy #1: routing\r\x1b[K"


def test_it_prints_each_new_progress_line_once_elsewhere():
    out = Terminal(tty=False)
    progress = Progress(out)
    for text in ("deploy #1: queued", "deploy #1: queued", "deploy #1: routing"):
        progress.show(text)
    progress.done()

    assert out.getvalue() == "deploy #1: queued\ndeploy #1: routing\n"


def test_it_falls_back_to_words_where_the_terminal_has_no_check_marks():
    assert symbol(True, Terminal(False, "utf-8")) == "✓"
    assert symbol(False, Terminal(False, "ascii")) == "FAILED"


def test_it_makes_one_line_of_api_errors():
    assert error_message(response(409, b'{"detail": "v1 is in use by production"}')) == "v1 is in use by production"
    assert error_message(response(400, b'{"name": ["taken"], "runtime": ["no php"]}')) == "name: taken; runtime: no php"
    assert error_message(response(400, b'{"non_field_errors": ["bad login"]}')) == "bad login"
    # A manifest's problems each name their own path: one a line.
    refused = '{"manifest": ["services.web.nodes: must be ≥ 1", "services.web.links[0]: no service named db"]}'.encode()
    assert error_message(response(400, refused)) == (
        "the manifest is refused:\n  services.web.nodes: must be ≥ 1\n  services.web.links[0]: no service named db"
    )
    assert error_message(response(409, b"<html>oops</html>")) == "HTTP 409 Conflict"


def test_it_keeps_the_config_file_private_even_when_it_was_not(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    monkeypatch.setenv("CONPAAS_CONFIG", str(path))
    path.write_text("{}")
    os.chmod(path, 0o644)

    config.save({"url": "http://x", "token": "secret", "username": "alice"})

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert config.load()["token"] == "secret"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"], "no temporary file left behind"


def test_it_ticks_counters_on_a_terminal_only_and_keeps_notes_everywhere():
    terminal, log = Terminal(tty=True), Terminal(tty=False)
    for out in (terminal, log):
        progress = Progress(out)
        progress.TICK_SECONDS = 60
        progress.tick("uploading a.tar.gz: 1.0 kB of 2.0 kB (50%)")
        progress.tick("uploading a.tar.gz: 2.0 kB of 2.0 kB (100%)")  # within TICK_SECONDS: not drawn
        progress.note("uploaded v1")

    assert terminal.getvalue() == "\r\x1b[Kuploading a.tar.gz: 1.0 kB of 2.0 kB (50%)\r\x1b[Kuploaded v1\n"
    assert log.getvalue() == "uploaded v1\n"


def test_waiting_on_an_operation_polls_often_at_first_then_once_a_second(monkeypatch):
    running = {"id": 7, "kind": "deploy", "state": "running", "progress": "step"}
    pauses, answers = [], iter([running] * 9 + [{**running, "state": "succeeded"}])
    monkeypatch.setattr(operations.time, "sleep", pauses.append)

    class Api:
        def get(self, path):
            assert path == "operations/7/"
            return next(answers)

    assert operations.wait(Api(), {**running, "state": "pending"})["state"] == "succeeded"
    assert pauses == [0.2, 0.3, 0.5, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_a_queued_operation_says_what_it_waits_for():
    from conpaas_cli.commands.operations import _status

    waiting = {"id": 3, "kind": "load", "state": "pending", "progress": "waiting for backup operation #2 to finish"}
    assert _status(waiting) == "load #3: queued, waiting for backup operation #2 to finish"
    assert _status({**waiting, "progress": ""}) == "load #3: queued"
    assert _status({**waiting, "state": "running", "progress": "loading"}) == "load #3: loading"
