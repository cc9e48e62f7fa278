from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class FirstAccount(models.Model):
    """The account made on the console's first-run page (workflows/first_account.py).

    There is at most one row, with id 1: of requests racing to make the first account, exactly one
    inserts it and the others' transactions fail on the primary key, their users with them."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="first_account_only_one")]

    def __str__(self) -> str:
        return f"first account {self.user}"
