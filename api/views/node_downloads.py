"""What the nodes download by signed, expiring links (no user session): archives and builds.
Not part of the user API: the OpenAPI description leaves `/internal/` out."""

from django.http import FileResponse, Http404

from versions.builds import build_from_token
from versions.instances import version_from_token


def archive_download(request, token):
    """Nodes fetch code versions here with a signed, expiring link (no user session)."""
    version = version_from_token(token)
    if version is None or not version.archive_path.exists():
        raise Http404("unknown or expired archive link")
    return FileResponse(open(version.archive_path, "rb"), content_type="application/octet-stream")


def build_download(request, token):
    """Nodes fetch a version's build here with a signed, expiring link (no user session)."""
    build = build_from_token(token)
    if build is None or not build.path.exists():
        raise Http404("unknown or expired build link")
    return FileResponse(open(build.path, "rb"), content_type="application/octet-stream")
