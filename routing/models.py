from django.db import models

from services.models import Service


class Resolution(models.TextChoices):
    RAW = "raw"  # one sample of the routers, every CONPAAS_METRICS_INTERVAL seconds
    MINUTE = "minute"  # the average of a minute's raw points, once they are past RAW_KEEP


class MetricPoint(models.Model):
    """The figures of one environment of a service over a short span, as its routers reported
    them: `time` is the end of the span. Kept bounded by routing/metrics.py: raw points for an
    hour, then minute averages for a day, then nothing."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="metric_points")
    # By name, as the API keys metrics: an environment's history follows its name through swaps.
    environment = models.CharField(max_length=40)
    resolution = models.CharField(max_length=10, choices=Resolution.choices, default=Resolution.RAW)
    time = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    request_rate = models.FloatField(default=0.0, help_text="requests a second sent to an instance")
    arrival_rate = models.FloatField(default=0.0, help_text="requests a second that reached the router")
    served_rate = models.FloatField(null=True, blank=True, help_text="answers a second that instances gave")
    p50_ms = models.FloatField(null=True, blank=True)
    p95_ms = models.FloatField(null=True, blank=True)
    error_rate = models.FloatField(default=0.0, help_text="share of 5xx answers, 0 to 1")
    live_connections = models.FloatField(default=0.0)

    class Meta:
        ordering = ["time", "id"]
        constraints = [
            # A second pass over the same sampling slot (two timers, a slow pass) adds nothing.
            models.UniqueConstraint(
                fields=["service", "environment", "resolution", "time"], name="metric_point_unique_time"
            )
        ]
        indexes = [
            models.Index(fields=["service", "time"], name="metric_point_service_time"),  # a service's series
            models.Index(fields=["resolution", "time"], name="metric_point_age"),  # roll-up and expiry passes
        ]

    def __str__(self) -> str:
        return f"{self.service_id}/{self.environment} {self.resolution} {self.time:%Y-%m-%d %H:%M:%S}"
