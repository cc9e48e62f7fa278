"""API-wide error handling: every refusal is a JSON body with one clear `detail` sentence."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from services.errors import ConpaasError


def exception_handler(exc, context):
    if isinstance(exc, ConpaasError):  # each domain error names its own status
        return Response({"detail": str(exc)}, status=exc.http_status)
    if isinstance(exc, DjangoValidationError):  # a model's rules: keyed by field, like a serializer's
        body = exc.message_dict if hasattr(exc, "error_dict") else {"detail": " ".join(exc.messages)}
        return Response(body, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
