"""The archive rulebook, shared by the control plane and the agent.

The control plane validates an upload with ``inspect_archive`` (and stores the entry point it
finds); the agent unpacks a staged archive with ``extract_archive`` and runs only an entry point
that ``valid_entry_point`` accepts. Standard library only; it reads the php runtime's
extensions from ``conpaas_common.php_platform``.

The package, by concern (callers import from the package, which re-exports what they use):

* ``members``: what every member must be on both sides, ``ArchiveError``, ``Limits``, the
  archive's kind from its first bytes, and the messages' formatting;
* ``rules``: the runtime rules (entry point, Procfile, php site, ``content_root``);
* ``inspection``: ``inspect_archive``, the control plane's check of an upload;
* ``extraction``: ``extract_archive``, the agent's unpacking.

``inspect_archive`` reads an uploaded archive once to hash it, then checks it
thoroughly *before* anything is stored or extracted:

* the type is detected from the content (zip or gzip-compressed tar), never
  from the file name;
* every member is checked: no absolute paths, ``..`` components, drive
  letters or NUL bytes in names; no symlinks, hard links, devices or FIFOs;
* size limits: upload size, number of members, expanded size and the
  expansion ratio (compression bombs).  Actual decompression is counted, so
  lying headers do not help;
* runtime rules: a ``.war`` for java, a WSGI entry point for python, at least
  one file for static, a PHP or HTML file for php, and no ``ext-*`` in the php
  site's composer.json ``require`` that the php runtime lacks.

Any refusal raises ``ArchiveError`` whose ``str()`` is one sentence meant for
the user (the API returns it as HTTP 400, the agent as 422).
"""

# __all__ is the module's as it was; the other public names (the CONTENT_TIME_* window, the size
# limits, procfile_release) stay reachable as archives.<name> too, as when this was one module.
from .extraction import CONTENT_TIME_BASE, CONTENT_TIME_SPAN, content_time, extract_archive  # noqa: F401
from .inspection import ArchiveInfo, Limits, inspect_archive
from .members import RATIO_MIN_BYTES, ArchiveError, MiB  # noqa: F401
from .rules import (  # noqa: F401
    MAX_COMPOSER_JSON_BYTES,
    MAX_PROCFILE_BYTES,
    MAX_RELEASE_COMMAND,
    RUNTIMES,
    content_root,
    procfile_release,
    release_command_problem,
    valid_entry_point,
)

__all__ = [
    "ArchiveError",
    "Limits",
    "ArchiveInfo",
    "inspect_archive",
    "extract_archive",
    "valid_entry_point",
    "release_command_problem",
    "content_root",
    "RUNTIMES",
]
