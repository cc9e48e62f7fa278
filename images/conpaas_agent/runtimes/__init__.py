"""The runtimes an agent runs, one recipe each (``base.Recipe``): a fifth runtime is a new module
here, its templates in ``images/templates/``, its Debian packages in ``images/recipes/`` and one
entry below."""

from __future__ import annotations

from .base import Recipe
from .etcd import Etcd
from .java import Java
from .mysql import Mysql
from .php import Php
from .postgresql import Postgresql
from .python import Python
from .redis import Redis
from .sentinel import Sentinel
from .static import Static
from .storage import Storage
from .tcp_router import TcpRouter

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (
        *(Python(), Php(), Static(), Java()),
        *(Postgresql(), Redis(), Mysql(), Storage()),
        *(Sentinel(), TcpRouter(), Etcd()),
    )
}
# Recipes that are parts of a replicated data service rather than a service's runtime: its
# router, and what decides its failovers (Redis's sentinels, the etcd of PostgreSQL's Patroni).
PARTS = frozenset({"sentinel", "tcp_router", "etcd"})
