from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from services import quotas


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


class Autoscaling(models.Model):
    """A service's autoscaling policy (workflows/autoscale.py decides by it), and what the
    autoscaler last decided. A service without a row is not autoscaled."""

    service = models.OneToOneField("services.Service", on_delete=models.CASCADE, related_name="autoscaling")
    enabled = models.BooleanField(default=False)
    target_p95_ms = models.PositiveIntegerField(
        default=250, validators=[MinValueValidator(1, "The target is a response time above 0 ms.")]
    )
    min_nodes = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1, "A service keeps at least 1 backend node.")]
    )
    max_nodes = models.PositiveSmallIntegerField(default=4)
    cooldown_s = models.PositiveIntegerField(
        default=30, validators=[MaxValueValidator(86400, "A cool-down is at most a day (86400 s).")]
    )
    # Requests a second one backend node answered when the service was last saturated: the
    # autoscaler sizes the service by it (None: never measured yet).
    node_capacity = models.FloatField(null=True, blank=True, editable=False)
    last_decision = models.JSONField(null=True, blank=True, editable=False)
    updated = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"autoscaling of {self.service}"

    def clean(self):
        if self.min_nodes and self.max_nodes < self.min_nodes:
            raise ValidationError({"max_nodes": f"max_nodes is at least min_nodes ({self.min_nodes})."})
        service = self.service
        # The service's nodes at most: max_nodes backend nodes, plus any node that only routes.
        proxy_only = service.live_nodes().filter(is_proxy=True, is_backend=False).count()
        allowed = quotas.nodes_left(service.owner, service) - proxy_only
        if self.max_nodes > allowed:
            quota = quotas.limit(service.owner, "nodes")
            left = f"your node quota ({quota}) leaves {service.name} at most {max(allowed, 0)} backend nodes."
            raise ValidationError({"max_nodes": left})

    def validate(self) -> None:
        """Every rule, field-keyed: a field's own (min_nodes ≥ 1, target > 0), then clean()'s."""
        self.full_clean(exclude=["service"], validate_unique=False, validate_constraints=False)
