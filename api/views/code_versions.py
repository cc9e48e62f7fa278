"""A service's code versions: upload, list, show and delete them."""

from rest_framework import status, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from api import openapi
from api.serializers import CodeVersionSerializer, UploadSerializer
from services.errors import no_such
from services.models import Service
from versions.storage import delete_version, store_version


@openapi.code_versions
class CodeVersionViewSet(viewsets.ViewSet):
    parser_classes = [MultiPartParser, FormParser]

    def list(self, request, service_pk=None):
        service = Service.objects.get_visible(request.user, service_pk)
        return Response(CodeVersionSerializer(service.versions.select_related("build"), many=True).data)

    def retrieve(self, request, service_pk=None, pk=None):
        return Response(CodeVersionSerializer(self._version(request, service_pk, pk)).data)

    def create(self, request, service_pk=None):
        service = Service.objects.get_visible(request.user, service_pk)
        upload = UploadSerializer(data=request.data)
        if not upload.is_valid():
            if "archive" in upload.errors:
                raise ValidationError({"detail": "send the code version as a multipart file field named 'archive'"})
            raise ValidationError(upload.errors)
        archive = upload.validated_data["archive"]
        version = store_version(service, archive, upload.validated_data.get("label", ""), request.user, archive.name)
        return Response(CodeVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, service_pk=None, pk=None):
        version = self._version(request, service_pk, pk)
        delete_version(version, request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _version(request, service_pk, pk):
        service = Service.objects.get_visible(request.user, service_pk)
        version = service.versions.filter(pk=pk).first() if str(pk).isdigit() else None
        if version is None:
            raise NotFound(no_such("version with id", pk, service.versions.values_list("pk", flat=True), service.name))
        return version
