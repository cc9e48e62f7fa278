import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "conpaas_site.settings")
application = get_wsgi_application()
get_resolver().urlconf_module  # noqa: B018 - import every view now, not on the first request

# What is loaded by now lives as long as the worker: keep it out of the garbage collector's full
# passes, which otherwise scan all of it every dozen requests of a large list (the API's list of
# 1,000 services: a p95 of ~80 ms instead of ~45 ms, bench/control_plane.py).
gc.freeze()
