"""Operations: the user's long actions, to follow; and the 202 answer that hands one out."""

from rest_framework import mixins, status, viewsets
from rest_framework.response import Response

from api import openapi
from api.serializers import OperationSerializer
from services.models import Operation


def accepted(operation: Operation) -> Response:
    return Response(OperationSerializer(operation).data, status=status.HTTP_202_ACCEPTED)


@openapi.operations
class OperationViewSet(mixins.RetrieveModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = OperationSerializer

    def get_queryset(self):
        return Operation.objects.visible_to(self.request.user)
