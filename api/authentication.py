"""`Authorization: Token <key>` (docs/design.md, REST API contract): django-rest-knox's check against the stored digest,
refusing an expired or revoked token with 401, plus the token's time of last use."""

from knox.auth import TokenAuthentication as KnoxTokenAuthentication


class TokenAuthentication(KnoxTokenAuthentication):
    def validate_user(self, auth_token):
        user, token = super().validate_user(auth_token)
        token.record_use()
        return user, token
