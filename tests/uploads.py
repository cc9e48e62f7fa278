"""Request bodies for the upload-limit tests."""

import io


class Tripwire:
    """A request body that records whether anything read it."""

    def __init__(self, content: bytes = b""):
        self.body = io.BytesIO(content)
        self.bytes_read = 0

    def read(self, size=-1):
        chunk = self.body.read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size=-1):
        line = self.body.readline(size)
        self.bytes_read += len(line)
        return line
