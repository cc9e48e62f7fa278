"""Upload limits applied while a request body arrives, before anything of it is kept.

Two guards, one rule (`upload_limits()`):
- conpaas_site.middleware answers 413 when the declared Content-Length is over the limit, before
  the body is read;
- `UploadLimitHandler`, first in FILE_UPLOAD_HANDLERS, cuts a multipart body off while it
  streams: once its files pass the limit (a Content-Length within the small multipart allowance,
  but a file part over the limit), and at the first file part of a request nobody signed in to.
  It deletes the temporary file it cut off, so nothing of a refused upload stays on disk.
"""

from django.core.files.uploadhandler import FileUploadHandler

from versions.storage import UploadRefused, upload_limits

# Room for the multipart framing and the small fields beside the archive (label, CSRF token).
MULTIPART_ALLOWANCE = 64 * 2**10


class UploadTooLarge(UploadRefused):
    """The body is over the upload limit; it was not read, or was cut off while it arrived."""

    http_status = 413

    def __init__(self):
        super().__init__(f"the upload is larger than the limit of {upload_limits().max_upload_bytes // 2**20} MB")


class UploadNeedsSignIn(UploadRefused):
    """A file sent by nobody signed in: refused at its first byte."""

    http_status = 403

    def __init__(self):
        super().__init__("sign in before uploading files")


def request_body_limit() -> int:
    """The largest Content-Length an upload may declare: the archive limit plus the multipart allowance."""
    return upload_limits().max_upload_bytes + MULTIPART_ALLOWANCE


def declares_too_large_body(meta) -> bool:
    try:
        return int(meta.get("CONTENT_LENGTH") or 0) > request_body_limit()
    except ValueError:
        return False  # Django reads such a body as empty


class UploadLimitHandler(FileUploadHandler):
    """Counts the bytes of every file part of a request and refuses past the limit.

    It passes each chunk on to the next handler (memory or temporary file) and keeps nothing
    itself. The user is checked at the first file part: Django's CSRF check and DRF's session
    authentication parse the body before a view runs, and DRF sets the token user on the request
    before it parses.
    """

    def __init__(self, request=None):
        super().__init__(request)
        self.received = 0
        self.limit = upload_limits().max_upload_bytes

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        user = getattr(self.request, "user", None)
        if user is None or not user.is_authenticated:
            self._discard()
            raise UploadNeedsSignIn()

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self._discard()
            raise UploadTooLarge()
        return raw_data

    def file_complete(self, file_size):
        return None  # the next handler makes the uploaded file

    def _discard(self) -> None:
        """Close the other handlers' open files: a temporary upload file is deleted when closed."""
        for handler in self.request.upload_handlers:
            file = getattr(handler, "file", None)
            if handler is not self and file is not None:
                file.close()
