"""API-wide error handling: every refusal is a JSON body with one clear `detail` sentence."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from routing.swap import SwapRefused
from services.operations import OperationFailed, ServiceBusy


def exception_handler(exc, context):
    if isinstance(exc, (SwapRefused, ServiceBusy)):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, OperationFailed):  # a node did not answer or refused: the platform's trouble
        return Response({"detail": str(exc)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
    if isinstance(exc, DjangoValidationError):
        return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_400_BAD_REQUEST)
    return drf_exception_handler(exc, context)
