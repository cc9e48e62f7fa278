"""Move the API tokens of DRF's `rest_framework.authtoken` (clear text, never expiring) into
services.ApiToken (django-rest-knox: a SHA-512 digest, an expiry), then drop DRF's table.

The digest is knox's own hash of the old key, so every old key keeps working, until
CONPAAS_TOKEN_TTL_DAYS after this migration (not after the key was created: an old installation's
keys would all be dead at once). The app is gone from INSTALLED_APPS, so its table is read with
plain SQL, when there is one: a fresh database has none."""

from datetime import UTC, timedelta

from django.conf import settings
from django.db import migrations
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from knox.crypto import hash_token
from knox.settings import CONSTANTS

DRF_TABLE = "authtoken_token"


def move_tokens(apps, schema_editor):
    connection = schema_editor.connection
    if DRF_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("services", "ApiToken")
    quote = schema_editor.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {quote('key')}, {quote('user_id')}, {quote('created')} FROM {quote(DRF_TABLE)}")
        rows = cursor.fetchall()
    expiry = timezone.now() + timedelta(days=settings.CONPAAS_TOKEN_TTL_DAYS)
    for key, user_id, created in rows:
        if isinstance(created, str):  # SQLite's plain SQL answers text, in UTC
            created = parse_datetime(created)
        if timezone.is_naive(created):
            created = timezone.make_aware(created, UTC)
        token = ApiToken.objects.create(
            user_id=user_id, digest=hash_token(key), token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH], expiry=expiry
        )
        ApiToken.objects.filter(pk=token.pk).update(created=created)  # `created` is auto_now_add
    # The clear-text keys go with the table; Django forgets the app's migrations with it.
    schema_editor.execute(f"DROP TABLE {quote(DRF_TABLE)}")
    MigrationRecorder(connection).migration_qs.filter(app="authtoken").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("services", "0005_api_tokens"),
    ]

    operations = [
        # Backwards the tokens stay where they are: the clear keys are not to be had again.
        migrations.RunPython(move_tokens, migrations.RunPython.noop),
    ]
