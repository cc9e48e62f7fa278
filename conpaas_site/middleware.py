"""Upload limits at the edge: refused before the body is read, or as soon as it goes over."""

from django.http import JsonResponse
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware

from versions.storage import UploadRefused
from versions.uploads import UploadTooLarge, declares_too_large_body


def refusal(exc: UploadRefused) -> JsonResponse:
    return JsonResponse({"detail": str(exc)}, status=exc.http_status)


class UploadLimitMiddleware:
    """First in MIDDLEWARE: a Content-Length over the upload limit is answered 413 at once, for any
    URL, before the body is read. A body that declares less is counted while it streams
    (versions.uploads.UploadLimitHandler); a view that parses it gets the refusal here."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if declares_too_large_body(request.META):
            return refusal(UploadTooLarge())
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, UploadRefused):  # raised by the upload handler while a view parsed the body
            return refusal(exception)
        return None


class CsrfViewMiddleware(DjangoCsrfViewMiddleware):
    """Django's CSRF check looks for its token in the body of a form post, before the view: the upload
    handler may refuse that body there."""

    def process_view(self, request, callback, callback_args, callback_kwargs):
        try:
            return super().process_view(request, callback, callback_args, callback_kwargs)
        except UploadRefused as exc:
            return refusal(exc)
