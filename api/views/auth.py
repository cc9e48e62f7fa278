"""API tokens: sign in for one, sign out (revoke the one in use), list and revoke the user's own."""

from django.contrib.auth import authenticate
from django.contrib.auth.signals import user_logged_in
from rest_framework import mixins, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from api import openapi
from api.serializers import ApiTokenSerializer, SignInSerializer
from services import tokens
from services.models import ApiToken


@openapi.sign_in
class TokenView(APIView):
    """POST: a username and password for a new API token. DELETE: revoke the token the request is
    sent with (`conpaas logout`).

    Sign-ins go through django.contrib.auth.authenticate with the underlying HttpRequest, where
    django-axes counts failures and AxesMiddleware answers a lockout (429, Retry-After), as it does
    for the console's and the admin's sign-in forms."""

    # A sign-in form as well as JSON, as most clients send one; never multipart: an anonymous
    # request may not make the server store a file.
    parser_classes = [JSONParser, FormParser]

    def get_permissions(self):
        return [AllowAny()] if self.request.method == "POST" else [IsAuthenticated()]

    def post(self, request):
        credentials = SignInSerializer(data=request.data)
        credentials.is_valid(raise_exception=True)
        user = authenticate(request._request, **credentials.validated_data)
        if user is None:
            raise ValidationError({"detail": "unable to sign in with that username and password"})
        # What a console sign-in sends too: last_login, and axes forgives this account's failures.
        user_logged_in.send(sender=type(user), request=request._request, user=user)
        token, key = tokens.issue(user)
        return Response({"token": key, "expiry": token.expiry})

    def delete(self, request):
        if not isinstance(request.auth, ApiToken):
            raise ValidationError({"detail": "this request was not sent with a token: there is none to revoke"})
        tokens.revoke(request.user, request.auth.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


@openapi.api_tokens
class ApiTokenViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The user's own API tokens that have not expired (never the secret); revoke one by its id."""

    serializer_class = ApiTokenSerializer

    def get_queryset(self):
        return tokens.live_tokens(self.request.user)

    def destroy(self, request, pk=None):
        tokens.revoke(request.user, pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
