"""The only module that speaks HTTP: the REST API (docs/design.md), its errors turned into `CliError`."""

import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import requests

from conpaas_cli.errors import UNREACHABLE, ApiError, CliError, NotLoggedIn

TIMEOUT = 60  # seconds; an upload of a large archive or a swap waiting for every proxy can take a while


def error_message(response: requests.Response) -> str:
    """One line from an API refusal: `{"detail": ...}` or DRF field errors `{"field": ["..."]}`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body:
        if isinstance(body.get("detail"), str):
            return body["detail"]
        parts = []
        for field, problems in body.items():
            if field == "manifest":  # each problem names its own path (services.web.nodes: …): one a line
                parts.append("\n  ".join(["the manifest is refused:", *_flatten(problems)]))
                continue
            text = "; ".join(_flatten(problems))
            parts.append(text if field in ("non_field_errors", "detail") else f"{field}: {text}")
        return "; ".join(parts)
    if isinstance(body, list) and body:
        return "; ".join(_flatten(body))
    return f"HTTP {response.status_code} {response.reason or ''}".strip()


def _flatten(problems: Any) -> list[str]:
    if isinstance(problems, list):
        return [text for problem in problems for text in _flatten(problem)]
    if isinstance(problems, dict):
        return [f"{key}: {text}" for key, value in problems.items() for text in _flatten(value)]
    return [str(problems)]


class Client:
    def __init__(self, url: str, token: str | None = None):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "conpaas-cli"
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    def request(self, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs) -> Any:
        """Call `path` (under /api/v1/); the decoded JSON body, or `CliError` with the server's reason."""
        target = f"{self.url}/api/v1/{path.lstrip('/')}"
        kwargs.setdefault("timeout", TIMEOUT)
        try:
            response = self.session.request(method, target, **kwargs)
        except requests.ConnectionError as exc:
            raise CliError(f"cannot reach {self.url}: {_reason(exc)}", UNREACHABLE) from None
        except requests.Timeout:
            raise CliError(f"cannot reach {self.url}: no answer in {kwargs['timeout']} s", UNREACHABLE) from None
        except requests.RequestException as exc:
            raise CliError(f"cannot reach {self.url}: {exc}", UNREACHABLE) from None
        if response.status_code == 401:
            raise NotLoggedIn()
        if response.status_code not in expect:
            if response.status_code >= 500:
                message = f"the server failed ({error_message(response)}); try again later"
                raise ApiError(message, response.status_code)
            raise ApiError(error_message(response), response.status_code)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{target} did not answer JSON; is {self.url} a ConPaaS server?", UNREACHABLE) from None

    def get(self, path: str, **kwargs) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, expect: tuple[int, ...] = (200, 201, 202), **kwargs) -> Any:
        return self.request("POST", path, expect=expect, **kwargs)

    def patch(self, path: str, expect: tuple[int, ...] = (200, 202), **kwargs) -> Any:
        return self.request("PATCH", path, expect=expect, **kwargs)

    def put(self, path: str, expect: tuple[int, ...] = (200,), **kwargs) -> Any:
        return self.request("PUT", path, expect=expect, **kwargs)

    def delete(self, path: str, expect: tuple[int, ...] = (202, 204), **kwargs) -> Any:
        return self.request("DELETE", path, expect=expect, **kwargs)

    def upload(
        self,
        path: str,
        archive: BinaryIO,
        filename: str,
        fields: dict[str, str],
        on_progress: Callable[[int, int], None] | None = None,
        field: str = "archive",
        expect: tuple[int, ...] = (201,),
    ) -> Any:
        """POST `archive` as the multipart file field `field`, read from its file while it is sent."""
        body = MultipartBody(fields, field, filename, archive, on_progress)
        return self.post(path, data=body, headers={"Content-Type": body.content_type}, expect=expect)


class MultipartBody:
    """A multipart/form-data body whose file part is read from disk as it is sent, never held in
    memory, with its length known up front (so the server can refuse an upload over its limit
    before it arrives). `on_progress(sent, size)` follows the file's bytes."""

    def __init__(
        self,
        fields: dict[str, str],
        name: str,
        filename: str,
        file: BinaryIO,
        on_progress: Callable[[int, int], None] | None = None,
    ):
        boundary = secrets.token_hex(16)
        self.content_type = f"multipart/form-data; boundary={boundary}"
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
            for key, value in fields.items()
        ]
        safe_name = "".join("_" if char in '"\\\r\n' else char for char in filename)
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{safe_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        self.head = "".join(parts).encode()
        self.tail = f"\r\n--{boundary}--\r\n".encode()
        self.file = file
        self.size = os.fstat(file.fileno()).st_size - file.tell()
        self.length = len(self.head) + self.size + len(self.tail)
        self.sent = 0
        self.on_progress = on_progress
        self._pending = self.head + (self.tail if self.size == 0 else b"")

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.length
        if not self._pending and self.sent < self.size:
            chunk = self.file.read(min(size, self.size - self.sent))
            if not chunk:
                raise CliError("the archive became shorter while it was sent; nothing was stored")
            self.sent += len(chunk)
            if self.on_progress:
                self.on_progress(self.sent, self.size)
            if self.sent == self.size:
                self._pending = self.tail
            return chunk
        chunk, self._pending = self._pending[:size], self._pending[size:]
        return chunk

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(2**16):
            yield chunk


def _reason(exc: requests.ConnectionError) -> str:
    """The innermost cause ('Connection refused', 'Name or service not known'), not urllib3's whole chain."""
    cause: BaseException | None = exc
    while cause is not None and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__
    text = str(cause or exc)
    if "] " in text and text.startswith("[Errno"):
        text = text.split("] ", 1)[1]
    if ": " in text and "Failed to establish" in text:
        text = text.rsplit(": ", 1)[1]
    return text or type(exc).__name__
