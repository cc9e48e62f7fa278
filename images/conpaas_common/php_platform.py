"""What the php runtime gives an application: its PHP extensions, and composer.json's ``require``
checked against them.

The one list of the extensions: the archive rules (``archives.inspect_archive``) refuse an upload
whose composer.json requires one the runtime lacks, and the agent's tests check that the
instances' php-fpm loads every one (tests/agent/test_runtimes.py). Standard library only.

The extensions are those of Debian 12's php-fpm (PHP 8.2) with the packages of
``images/recipes/php.txt``, named as composer names them (``ext-<name>``): PHP's name lower-cased,
spaces as hyphens, so OPcache (``Zend OPcache``) is ``zend-opcache``. pcntl and readline are
php-cli's only: no web request has them, so they are not here.
"""

from __future__ import annotations

import json

__all__ = ["PHP_EXTENSIONS", "extension_name", "composer_problem"]

PHP_EXTENSIONS = frozenset(
    {
        # compiled into php-fpm8.2
        "core",
        "date",
        "filter",
        "hash",
        "json",
        "libxml",
        "openssl",
        "pcre",
        "random",
        "reflection",
        "session",
        "sodium",
        "spl",
        "standard",
        "zlib",
        # php8.2-common, and php8.2-opcache, which php8.2-fpm depends on
        "calendar",
        "ctype",
        "exif",
        "ffi",
        "fileinfo",
        "ftp",
        "gettext",
        "iconv",
        "pdo",
        "phar",
        "posix",
        "shmop",
        "sockets",
        "sysvmsg",
        "sysvsem",
        "sysvshm",
        "tokenizer",
        "zend-opcache",
        # the recipe's packages (php-redis brings igbinary, php-mysql mysqlnd)
        "apcu",
        "curl",
        "dom",
        "gd",
        "igbinary",
        "intl",
        "mbstring",
        "mysqli",
        "mysqlnd",
        "pdo_mysql",
        "pdo_pgsql",
        "pgsql",
        "redis",
        "simplexml",
        "xml",
        "xmlreader",
        "xmlwriter",
        "xsl",
        "zip",
    }
)


def extension_name(name: str) -> str:
    """Composer's name of a PHP extension, as ``get_loaded_extensions()`` or an ``ext-*``
    requirement spells it: ``Zend OPcache`` and ``zend-opcache`` are both ``zend-opcache``."""
    return name.strip().lower().replace(" ", "-")


def composer_problem(text: bytes, path: str = "composer.json") -> str | None:
    """Why a php archive whose composer.json (at ``path``) holds ``text`` cannot run here (None:
    it can). Only ``require`` counts: ``require-dev`` is not installed on the platform, and the
    other platform packages (``php``, ``lib-*``, ``composer-plugin-api``) are not extensions."""
    try:
        composer = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        return f"{path} is not valid UTF-8 text"
    except ValueError as exc:
        return f"{path} is not valid JSON: {exc}"
    if not isinstance(composer, dict):
        return f"{path} is not valid: it must be a JSON object"
    require = composer.get("require", {})
    if not isinstance(require, dict):
        return f'{path} is not valid: "require" must be an object of package names and versions'
    wanted = {extension_name(package[4:]) for package in require if package.lower().startswith("ext-")}
    missing = [f"ext-{name}" for name in sorted(wanted - PHP_EXTENSIONS)]
    if not missing:
        return None
    names = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
    return f"{path} requires {names}, which the php runtime does not have (it has: {', '.join(sorted(PHP_EXTENSIONS))})"
