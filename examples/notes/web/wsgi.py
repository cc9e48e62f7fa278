"""The notes example: reads and writes the database it links (DATABASE_URL) and says what it runs
with: its code version, two settings and the notes it reads. `POST /?note=...` adds a note.

It talks to PostgreSQL through psql (Debian's client on every node), so it needs no driver; a real
app would use psycopg from its requirements.txt."""

import os
import subprocess
from urllib.parse import parse_qs, unquote, urlsplit


def connection_environment() -> dict:
    """DATABASE_URL as libpq's variables: in psql's command line, its password would be in every
    traceback and process list."""
    url = urlsplit(os.environ["DATABASE_URL"])
    parts = {"PGHOST": url.hostname, "PGPORT": url.port, "PGUSER": url.username, "PGPASSWORD": url.password}
    parts["PGDATABASE"] = url.path.lstrip("/")
    return {**os.environ, **{name: unquote(str(value)) for name, value in parts.items() if value}}


def sql(statement: str) -> str:
    done = subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", statement],
        capture_output=True,
        text=True,
        timeout=20,
        env=connection_environment(),
    )
    return done.stdout.strip() if done.returncode == 0 else "error: " + done.stderr.strip()


def application(environ, start_response):
    note = parse_qs(environ.get("QUERY_STRING", "")).get("note")
    if environ["REQUEST_METHOD"] == "POST" and note:
        sql("INSERT INTO notes VALUES ('" + note[0].replace("'", "''") + "')")
    rows = sql("SELECT string_agg(text, ',' ORDER BY text) FROM notes")
    words = [os.environ["CONPAAS_VERSION"], os.environ.get("GREETING", "-"), os.environ.get("PAYMENT_API", "-"), rows]
    body = (" ".join(words) + "\n").encode()
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]
