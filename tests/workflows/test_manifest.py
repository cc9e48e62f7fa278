"""Reading a manifest: every wrong field is refused with its path (workflows/manifest.py)."""

import textwrap

import pytest

from workflows.manifest import ManifestInvalid, parse

GOOD = """\
application: wiki
services:
  web:
    runtime: python
    nodes: 2
    links: [api]
    versions:
      v1: ./web-v1.zip
      v2: ./web-v2.zip
    environments:
      production: v1
      development: {version: v2}
      staging: v1
  api:
    runtime: python
    versions: {a1: api.zip}
    environments: {production: a1}
"""


def test_it_reads_a_manifest():
    manifest = parse(GOOD)

    assert manifest.application == "wiki"
    web = manifest.services["web"]
    assert (web.runtime, web.nodes, web.links) == ("python", 2, ["api"])
    assert web.versions == {"v1": "./web-v1.zip", "v2": "./web-v2.zip"}
    assert {name: env.version for name, env in web.environments.items()} == {
        "production": "v1",
        "development": "v2",
        "staging": "v1",
    }
    assert manifest.services["api"].nodes == 1
    assert manifest.paths() == {
        "./web-v1.zip": "services.web.versions.v1",
        "./web-v2.zip": "services.web.versions.v2",
        "api.zip": "services.api.versions.a1",
    }


def web(body: str) -> str:
    """A manifest whose service `web` has `body` (YAML lines) as its fields."""
    return "application: wiki\nservices:\n  web:\n" + textwrap.indent(textwrap.dedent(body), "    ")


@pytest.mark.parametrize(
    "text, error",
    [
        ("", "manifest: is empty"),
        ("- a\n- b\n", "manifest: must be a mapping"),
        ("application: wiki\nservices: [\n", "manifest: not valid YAML"),
        ("services: {web: {runtime: python}}\n", "application: is required"),
        ("application: Wiki!\nservices: {web: {runtime: python}}\n", "application: Use 2 to 40 lowercase"),
        ("application: wiki\n", "services: is required"),
        ("application: wiki\nservices: {}\n", "services: must name at least one service"),
        ("application: wiki\nservices: []\n", "services: must be a mapping"),
        ("application: wiki\nservies: {}\nservices: {web: {runtime: python}}\n", "servies: unknown key"),
        ("application: wiki\nservices: {Web_1: {runtime: python}}\n", "services.Web_1: Use 2 to 40"),
        ("application: wiki\nservices: {web: python}\n", "services.web: must be a mapping"),
        (web("nodes: 2\n"), "services.web.runtime: is required"),
        (web("runtime: cobol\n"), "services.web.runtime: must be one of: python, php, java, static"),
        (web("runtime: python\nnodes: 0\n"), "services.web.nodes: must be ≥ 1"),
        (web("runtime: python\nnodes: -3\n"), "services.web.nodes: must be ≥ 1"),
        (web("runtime: redis\nnodes: 6\n"), "services.web.nodes: a redis service runs 1 to 5 servers"),
        (web("runtime: postgresql\nnodes: 9\n"), "services.web.nodes: a postgresql service runs 1 to 5 servers"),
        (web("runtime: redis\nsynchronous: true\n"), "services.web.synchronous: only postgresql services commit"),
        (web("runtime: mysql\nsynchronous: true\n"), "services.web.synchronous: a mysql service commits synchronously"),
        (web("runtime: postgresql\nsynchronous: 1\n"), "services.web.synchronous: must be true or false"),
        (web("runtime: python\nnodes: two\n"), "services.web.nodes: must be a whole number"),
        (web("runtime: python\nnodes: 1.5\n"), "services.web.nodes: must be a whole number"),
        (web("runtime: python\nnodes: true\n"), "services.web.nodes: must be a whole number"),
        (web("runtime: python\nnode: 2\n"), "services.web.node: unknown key"),
        (web("runtime: python\nlinks: db\n"), "services.web.links: must be a list of service names"),
        (web("runtime: python\nlinks: [db]\n"), "services.web.links[0]: no service named db in this manifest"),
        (web("runtime: python\nlinks: [web]\n"), "services.web.links[0]: a service cannot link itself"),
        (web("runtime: python\nlinks: ['']\n"), "services.web.links[0]: must be non-empty text"),
        (web("runtime: python\nversions: [a.zip]\n"), "services.web.versions: must be a mapping"),
        (web("runtime: python\nversions: {'v 1': a.zip}\n"), "services.web.versions.v 1: A label is up to 40"),
        (web("runtime: python\nversions: {v1: 3}\n"), "services.web.versions.v1: must be non-empty text"),
        (
            web("runtime: python\nversions: {v1: a.zip}\nenvironments: {production: v9}\n"),
            "services.web.environments.production: must name a version of this service (the manifest's: v1)",
        ),
        (
            web("runtime: python\nenvironments: {production: v1}\n"),
            "services.web.environments.production: must name a version of this service (the manifest's: none)",
        ),
        (
            web("runtime: python\nversions: {v1: a.zip}\nenvironments: {Prod: v1}\n"),
            "services.web.environments.Prod: Use 2 to 40",
        ),
        (
            web("runtime: python\nversions: {v1: a.zip}\nenvironments: {production: {label: v1}}\n"),
            "services.web.environments.production.label: unknown key",
        ),
        (
            web("runtime: python\nversions: {v1: a.zip}\nenvironments: {production: {database: copy}}\n"),
            "services.web.environments.production.version: is required",
        ),
        (
            web("runtime: python\nversions: {v1: a.zip}\nenvironments: {production: {version: v1, database: move}}\n"),
            "services.web.environments.production.database: must be copy",
        ),
        (web("runtime: python\ndump: ./wiki.sql\n"), "services.web.dump: not for a python service"),
        (web("runtime: python\nsettings: {1A: b}\n"), "services.web.settings.1A: a setting's name is letters"),
        (web("runtime: python\nsettings: {A: [b]}\n"), "services.web.settings.A: the value is a string"),
        (web("runtime: python\nsettings: {A: {value: b, sticky: maybe}}\n"), "services.web.settings.A: sticky is"),
        (web("runtime: python\nsettings: [A]\n"), "services.web.settings: an object of NAME"),
        (
            web("runtime: python\nsettings: {CONPAAS_ENV: x}\n"),
            "services.web.settings.CONPAAS_ENV: names starting with CONPAAS_",
        ),
        (web("runtime: postgresql\nsettings: {A: b}\n"), "services.web.settings: not for a postgresql service"),
        (
            web("runtime: python\nsettings: {A: b}\nsettings: {C: d}\n"),
            "manifest: not valid YAML at line 6, column 5: the key 'settings' is written twice in one mapping",
        ),
        (
            "application: wiki\nservices:\n  db: {runtime: redis}\n  web: {runtime: python, links: [db], "
            "settings: {REDIS_URL: x}}\n",
            "services.web.settings.REDIS_URL: set by the link to db",
        ),
        (
            web("runtime: python\nversions: {v1: a.zip}\nenvironments: {production: {version: v1, database: copy}}\n"),
            "services.web.environments.production.database: production uses the linked databases themselves",
        ),
        (
            web("runtime: python\nversions: {v1: a.zip}\nenvironments: {dev: {version: v1, settings: {2X: y}}}\n"),
            "services.web.environments.dev.settings.2X: a setting's name",
        ),
        (web("runtime: python\nrelease: ''\n"), "services.web.release: must be a command"),
        (web("runtime: python\nrelease: [migrate]\n"), "services.web.release: must be a command"),
        (web('runtime: python\nrelease: "python \'x"\n'), "services.web.release: has unbalanced quotes"),
        ("application: wiki\nservices: {web: {runtime: python}, 1: {runtime: php}}\n", "services: 1: keys must be"),
        (web("runtime: python\nhealth: /healthz\n"), "services.web.health: must be a mapping"),
        (
            web("runtime: python\nhealth: {url: /x}\n"),
            "services.web.health.url: unknown key (expected one of: path, status)",
        ),
        (web("runtime: python\nhealth: {path: healthz}\n"), "services.web.health.path: must be a path starting with /"),
        (web("runtime: python\nhealth: {path: '/a b'}\n"), "services.web.health.path: must be a path starting with /"),
        (web("runtime: python\nhealth: {path: 3}\n"), "services.web.health.path: must be text"),
        (web("runtime: python\nhealth: {status: 404}\n"), "services.web.health.status: must be one status from 200"),
        (web("runtime: python\nhealth: {status: ok}\n"), "services.web.health.status: must be a whole number"),
        (web("runtime: python\nhealth: {status: true}\n"), "services.web.health.status: must be a whole number"),
        (web("runtime: redis\nhealth: {path: /}\n"), "services.web.health: not for a redis service: data services"),
        (web("runtime: java\njava_heap_mb: 32\n"), "services.web.java_heap_mb: Ensure this value is greater"),
        (web("runtime: java\njava_heap_mb: lots\n"), "services.web.java_heap_mb: must be a whole number"),
        (web("runtime: php\njava_heap_mb: 512\n"), "services.web.java_heap_mb: not for a php service: only java"),
        (web("runtime: python\nbackups: false\n"), "services.web.backups: not for a python service: only data"),
        (
            web("runtime: redis\nbackups: daily\n"),
            "services.web.backups: must be {every_hours: H, keep_days: D} or false",
        ),
        (web("runtime: redis\nbackups: {every: 3}\n"), "services.web.backups.every: unknown key"),
        (web("runtime: postgresql\nbackups: {keep_days: 0}\n"), "services.web.backups.keep_days: Ensure this value"),
        (web("runtime: postgresql\nbackups: {every_hours: x}\n"), "services.web.backups.every_hours: must be a whole"),
    ],
)
def test_it_refuses_a_wrong_field_naming_its_path(text, error):
    with pytest.raises(ManifestInvalid) as refused:
        parse(text)

    assert any(line.startswith(error) for line in refused.value.errors), refused.value.errors


def test_it_reads_the_health_check_and_the_heap():
    manifest = parse(
        "application: wiki\nservices:\n"
        "  web: {runtime: python, health: {path: /healthz, status: 200}}\n"
        "  api: {runtime: php, health: {path: '/up?deep=1'}}\n"
        "  shop: {runtime: java, java_heap_mb: 512}\n"
    )

    web, api, shop = (manifest.services[name] for name in ("web", "api", "shop"))
    assert web.options() == {
        "java_heap_mb": 256,
        "health_check_path": "/healthz",
        "health_check_status": 200,
        "synchronous": False,
    }
    assert (api.health_path, api.health_status) == ("/up?deep=1", None)
    assert shop.options() == {
        "java_heap_mb": 512,
        "health_check_path": "/",
        "health_check_status": None,
        "synchronous": False,
    }


def test_it_lists_every_problem_at_once():
    text = web("runtime: python\nnodes: 0\nlinks: [db]\nextra: 1\n")

    with pytest.raises(ManifestInvalid) as refused:
        parse(text)

    assert refused.value.errors == [
        "services.web.extra: unknown key (expected one of: runtime, nodes, links, versions, environments, "
        "settings, release, health, java_heap_mb, synchronous, dump, backups)",
        "services.web.nodes: must be ≥ 1",
        "services.web.links[0]: no service named db in this manifest",
    ]
    assert str(refused.value) == "\n".join(refused.value.errors), "one per line"


def test_it_refuses_yaml_tags_it_does_not_know():
    with pytest.raises(ManifestInvalid, match="not valid YAML"):
        parse("application: !!python/object:os.system wiki\nservices: {}\n")


def test_it_refuses_a_manifest_too_large_to_be_one():
    with pytest.raises(ManifestInvalid, match="manifest: larger than 256 KB"):
        parse("# " + "x" * 300_000)


def test_it_refuses_links_that_go_round_in_a_circle():
    text = (
        "application: wiki\nservices:\n"
        "  aa: {runtime: python, links: [bb]}\n  bb: {runtime: python, links: [cc]}\n"
        "  cc: {runtime: python, links: [aa]}\n"
    )

    with pytest.raises(ManifestInvalid) as refused:
        parse(text)

    assert refused.value.errors == ["services.aa.links[0]: links go round in a circle (aa → bb → cc → aa)"]


def test_it_refuses_two_links_that_would_give_the_same_variable_and_takes_mysql_nodes():
    text = (
        "application: shop\nservices:\n"
        "  pg: {runtime: postgresql}\n  my: {runtime: mysql, nodes: 3}\n  two: {runtime: mysql, nodes: 2}\n"
        "  web: {runtime: python, links: [pg, my]}\n"
    )

    with pytest.raises(ManifestInvalid) as refused:
        parse(text)

    assert refused.value.errors == [
        "services.two.nodes: a mysql service runs 1 server or a Galera cluster of 3 to 5, not 2: a cluster of 2 "
        "loses its majority, and takes no write, when one member is cut off",
        "services.web.links[1]: my and pg would both give DATABASE_URL: link one service of each kind",
    ]


def test_it_orders_linked_services_before_those_that_link_them():
    text = (
        "application: wiki\nservices:\n"
        "  web: {runtime: python, links: [api, cache]}\n  api: {runtime: python, links: [cache]}\n"
        "  cache: {runtime: static}\n"
    )

    assert [s.name for s in parse(text).ordered()] == ["cache", "api", "web"]


def test_it_reads_a_data_services_backup_policy():
    manifest = parse(
        "application: wiki\nservices:\n"
        "  db: {runtime: postgresql, backups: {every_hours: 6}}\n"
        "  cache: {runtime: redis, backups: false}\n"
        "  other: {runtime: redis}\n"
    )
    assert manifest.services["db"].backups == {"enabled": True, "every_hours": 6, "keep_days": 7}
    assert manifest.services["cache"].backups == {"enabled": False, "every_hours": 24, "keep_days": 7}
    assert manifest.services["other"].backups == {"enabled": True, "every_hours": 24, "keep_days": 7}
