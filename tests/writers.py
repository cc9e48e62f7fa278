"""Writers that commit numbered rows (PostgreSQL, MySQL) or keys (Redis) through a data service's URL,
one every `every` seconds, reconnecting after a failure as a client library with retries does,
and recording each acknowledgement and each failure with its time: what the replication tests
and bench/failover.py measure a failover and a scale by."""

import threading
import time
from urllib.parse import urlsplit

import psycopg
import pymysql
import redis


class Writer(threading.Thread):
    def __init__(self, url: str, every: float = 0.02):
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.acked: list[tuple[float, int]] = []  # (monotonic time, number) of each acknowledged write
        self.failures: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.connection = None

    def run(self) -> None:
        number = 0
        while not self.stop.is_set():
            number += 1
            try:
                if self.connection is None:
                    self.connection = self.connect()
                self.write(number)
                self.acked.append((time.monotonic(), number))
            except Exception as exc:  # every client error is a failed write, said with its words
                self.failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"[:200]))
                self.close()
            time.sleep(self.every)
        self.close()

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:  # a dead connection may fail to close: it is dropped either way
                pass
        self.connection = None

    def first_ack_after(self, moment: float) -> float | None:
        return next((at for at, _ in self.acked if at > moment), None)

    def outage(self, moment: float) -> float | None:
        """Seconds from `moment` (a kill) to the first acknowledged write after the writes began
        to fail (a write in flight may still be acknowledged in the milliseconds the kill takes);
        to the first acknowledged one when none failed."""
        failed = next((at for at, _ in self.failures if at > moment), None)
        first = self.first_ack_after(moment if failed is None else failed)
        return None if first is None else first - moment


class PostgresWriter(Writer):
    """INSERT INTO writes (n) in its own transaction, autocommit: an acknowledgement is a commit."""

    def connect(self):
        connection = psycopg.connect(self.url, autocommit=True, connect_timeout=3)
        connection.execute("CREATE TABLE IF NOT EXISTS writes (n int PRIMARY KEY)")
        return connection

    def write(self, number: int) -> None:
        self.connection.execute("INSERT INTO writes (n) VALUES (%s)", (number,))

    def missing(self) -> list[int]:
        """Acknowledged numbers the database does not have (read through the same URL, again for
        up to 30 s while it does not answer: right after a failover the router may briefly have
        no primary, which is the outage's figure, not this count's)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=5) as connection:
                    present = {row[0] for row in connection.execute("SELECT n FROM writes")}
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        return [number for _, number in self.acked if number not in present]


class MysqlWriter(Writer):
    """INSERT INTO writes (n) through PyMySQL, autocommit: an acknowledgement is a commit (Galera's:
    certified on every member)."""

    def _connect(self, timeout: int):
        parts = urlsplit(self.url)
        return pymysql.connect(
            host=parts.hostname,
            port=parts.port,
            user=parts.username,
            password=parts.password,
            database=parts.path.lstrip("/"),
            autocommit=True,
            connect_timeout=timeout,
            read_timeout=timeout,
            write_timeout=timeout,
        )

    def connect(self):
        connection = self._connect(3)
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS writes (n int PRIMARY KEY)")
        return connection

    def write(self, number: int) -> None:
        with self.connection.cursor() as cursor:
            cursor.execute("INSERT INTO writes (n) VALUES (%s)", (number,))

    def missing(self) -> list[int]:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = self._connect(10)
                with connection, connection.cursor() as cursor:
                    cursor.execute("SELECT n FROM writes")
                    present = {row[0] for row in cursor.fetchall()}
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        return [number for _, number in self.acked if number not in present]


class RedisWriter(Writer):
    """SET write:<n> through redis-py; an acknowledgement is the server's OK."""

    def connect(self):
        parts = urlsplit(self.url)
        return redis.Redis(
            host=parts.hostname, port=parts.port, password=parts.password, socket_timeout=3, socket_connect_timeout=3
        )

    def write(self, number: int) -> None:
        self.connection.set(f"write:{number}", number)

    def missing(self) -> list[int]:
        parts = urlsplit(self.url)
        client = redis.Redis(host=parts.hostname, port=parts.port, password=parts.password, socket_timeout=10)
        numbers = [number for _, number in self.acked]
        present = client.mget([f"write:{number}" for number in numbers]) if numbers else []
        return [number for number, value in zip(numbers, present, strict=True) if value is None]


def writer_for(runtime: str, url: str, every: float = 0.02) -> Writer:
    return {"postgresql": PostgresWriter, "redis": RedisWriter, "mysql": MysqlWriter}[runtime](url, every)
