"""API tokens, one rulebook for the API, the console and (through the API) the CLI.

Tokens are django-rest-knox's (services.ApiToken): the database keeps a SHA-512 digest, the token
itself is shown once, when it is issued for a password (POST /api/v1/auth/token/). Each expires
CONPAAS_TOKEN_TTL_DAYS after it was issued (knox refuses it, 401, and deletes it); its owner
lists and revokes their own; any change of the owner's password revokes them all."""

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.utils import timezone

from services.errors import NotFound
from services.models import ApiToken


def issue(user: AbstractBaseUser) -> tuple[ApiToken, str]:
    """A new token for `user`, expiring after CONPAAS_TOKEN_TTL_DAYS: its row, and the token in
    clear, which exists only here and in the answer to its owner."""
    return ApiToken.objects.create(user=user)


def live_tokens(user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """The user's own tokens that have not expired, newest first (staff see only theirs too)."""
    return ApiToken.objects.filter(user=user).filter(Q(expiry__isnull=True) | Q(expiry__gt=timezone.now()))


def revoke(user: AbstractBaseUser, token_id) -> ApiToken:
    """Revoke one of the user's tokens by its id; another user's token is a 404, like a missing one."""
    token = live_tokens(user).filter(pk=token_id).first() if str(token_id).isdigit() else None
    if token is None:
        raise NotFound(f"you have no token with id {token_id}")
    token.delete()
    return token


def revoke_on_password_change(sender, instance, update_fields=None, **kwargs) -> None:
    """pre_save of the user model: a new password hash ends every token of the user, whatever
    changed it (the admin, `manage.py changepassword`, set_password() anywhere). Django's own
    hash upgrade after a release changes the hash too: tokens then end once more than needed,
    never less. Console sessions end by themselves (Django's session auth hash)."""
    if instance._state.adding or instance.pk is None:
        return
    if update_fields is not None and "password" not in update_fields:
        return  # e.g. last_login, saved at every sign-in
    stored = type(instance)._default_manager.filter(pk=instance.pk).values_list("password", flat=True).first()
    if stored is not None and stored != instance.password:
        ApiToken.objects.filter(user_id=instance.pk).delete()
