from django.http import FileResponse, Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from services.api.serializers import OperationSerializer
from services.api.views import accepted, visible_service
from versions.api.serializers import CodeVersionSerializer, DeploySerializer, EnvironmentSerializer, UploadSerializer
from versions.deploy import version_from_token
from versions.environments import add_environment, change_preview_key, request_deploy
from versions.storage import UploadRefused, VersionInUse, delete_version, store_version


class CodeVersionViewSet(viewsets.ViewSet):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(responses=CodeVersionSerializer(many=True))
    def list(self, request, service_pk=None):
        service = visible_service(request, service_pk)
        return Response(CodeVersionSerializer(service.versions.all(), many=True).data)

    @extend_schema(responses=CodeVersionSerializer)
    def retrieve(self, request, service_pk=None, pk=None):
        return Response(CodeVersionSerializer(self._version(request, service_pk, pk)).data)

    @extend_schema(request=UploadSerializer, responses={201: CodeVersionSerializer})
    def create(self, request, service_pk=None):
        service = visible_service(request, service_pk)
        upload = UploadSerializer(data=request.data)
        if not upload.is_valid():
            if "archive" in upload.errors:
                raise ValidationError({"detail": "send the code version as a multipart file field named 'archive'"})
            raise ValidationError(upload.errors)
        archive = upload.validated_data["archive"]
        try:
            version = store_version(
                service, archive, upload.validated_data.get("label", ""), request.user, archive.name
            )
        except UploadRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(CodeVersionSerializer(version).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, service_pk=None, pk=None):
        version = self._version(request, service_pk, pk)
        try:
            delete_version(version, request.user)
        except VersionInUse as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _version(request, service_pk, pk):
        service = visible_service(request, service_pk)
        version = service.versions.filter(pk=pk).first() if str(pk).isdigit() else None
        if version is None:
            raise NotFound(f"{service.name} has no version with id {pk}")
        return version


class EnvironmentViewSet(viewsets.ViewSet):
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    @extend_schema(responses=EnvironmentSerializer(many=True))
    def list(self, request, service_pk=None):
        service = visible_service(request, service_pk)
        environments = service.environments.select_related("version", "service")
        return Response(EnvironmentSerializer(environments, many=True, context={"service": service}).data)

    @extend_schema(responses=EnvironmentSerializer)
    def retrieve(self, request, service_pk=None, name=None):
        environment = self._environment(request, service_pk, name)
        return Response(EnvironmentSerializer(environment, context={"service": environment.service}).data)

    @extend_schema(request=EnvironmentSerializer, responses={201: EnvironmentSerializer})
    def create(self, request, service_pk=None):
        service = visible_service(request, service_pk)
        serializer = EnvironmentSerializer(data=request.data, context={"service": service})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        environment = add_environment(service, data["name"], request.user, data.get("preview_key", ""))
        return Response(
            EnvironmentSerializer(environment, context={"service": service}).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(request=DeploySerializer, responses={200: EnvironmentSerializer, 202: OperationSerializer})
    def partial_update(self, request, service_pk=None, name=None):
        environment = self._environment(request, service_pk, name)
        service = environment.service
        serializer = DeploySerializer(data=request.data, context={"service": service})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "preview_key" in data:
            key_check = EnvironmentSerializer(
                environment, data={"preview_key": data["preview_key"]}, partial=True, context={"service": service}
            )
            key_check.is_valid(raise_exception=True)
            change_preview_key(environment, data["preview_key"], request.user)
        if "version" not in data:
            return Response(EnvironmentSerializer(environment, context={"service": service}).data)
        version = service.versions.get(pk=data["version"])
        operation = request_deploy(environment, version, request.user)
        return accepted(operation)

    @staticmethod
    def _environment(request, service_pk, name):
        service = visible_service(request, service_pk)
        environment = service.environments.select_related("version", "service").filter(name=name).first()
        if environment is None:
            raise NotFound(f"{service.name} has no environment named {name}")
        return environment


def archive_download(request, token):
    """Nodes fetch code versions here with a signed, expiring link (no user session)."""
    version = version_from_token(token)
    if version is None or not version.archive_path.exists():
        raise Http404("unknown or expired archive link")
    return FileResponse(open(version.archive_path, "rb"), content_type="application/octet-stream")
