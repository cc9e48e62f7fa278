"""API-wide error handling: every refusal is a JSON body with one clear `detail` sentence."""

from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import JsonResponse
from django.views.defaults import page_not_found
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from services.errors import ConpaasError


def exception_handler(exc, context):
    if isinstance(exc, ConpaasError):  # each domain error names its own status
        return Response({"detail": str(exc)}, status=exc.http_status)
    if isinstance(exc, DjangoValidationError):  # a model's rules: keyed by field, like a serializer's
        if hasattr(exc, "error_dict"):
            body = exc.message_dict
            if NON_FIELD_ERRORS in body:  # a rule of the whole object: said as the answer's detail
                body["detail"] = " ".join(body.pop(NON_FIELD_ERRORS))
        else:
            body = {"detail": " ".join(exc.messages)}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)


def not_found(request, exception):
    """The site's 404 (handler404): under /api/ a JSON body like every other refusal of the API (a
    path that matches no route, such as /api/v1/services/abc/), elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
    return page_not_found(request, exception)
