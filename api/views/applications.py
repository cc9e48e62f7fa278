"""Applications: list, create and delete them, and apply a manifest."""

from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from api import openapi
from api.serializers import ApplicationSerializer, ApplySerializer, OperationSerializer
from services.models import Application
from workflows.applying import apply, delete_application, plan_lines
from workflows.manifest import ManifestInvalid, parse


@openapi.applications
class ApplicationViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    serializer_class = ApplicationSerializer

    def perform_create(self, serializer):
        # The name's rules are the model's (Application.clean); api/errors.py answers them by field.
        Application(owner=self.request.user, **serializer.validated_data).validate()
        serializer.save(owner=self.request.user)

    def get_queryset(self):
        return Application.objects.visible_to(self.request.user).prefetch_related("services").order_by("name", "id")

    def destroy(self, request, pk=None):
        operations = delete_application(self.get_object(), request.user)
        return Response(OperationSerializer(operations, many=True).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def apply(self, request):
        """Converge an application to a manifest (docs/design.md, Manifest contract): 200 with the plan
        when nothing was started (a dry run, or nothing to do), 202 with the operations started."""
        serializer = ApplySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            manifest = parse(serializer.validated_data["manifest"])
        except ManifestInvalid as exc:
            raise ValidationError({"manifest": exc.errors}) from None
        try:
            applied = apply(request.user, manifest, dict(request.FILES.items()), serializer.validated_data["dry_run"])
        except ManifestInvalid as exc:
            raise ValidationError({"manifest": exc.errors}) from None
        body = {
            "application": manifest.application,
            "dry_run": applied.dry_run,
            **plan_lines(applied.plan),
            "operations": OperationSerializer(applied.operations, many=True).data,
        }
        return Response(body, status=status.HTTP_202_ACCEPTED if applied.operations else status.HTTP_200_OK)
