"""The php runtime's extensions and the upload rule on composer.json's `require`
(images/conpaas_common/php_platform.py, through the archive rules). That php-fpm really loads the
extensions listed: tests/agent/test_runtimes.py."""

import io
import json
import os

import pytest

from conpaas_common.archives import ArchiveError, inspect_archive
from conpaas_common.php_platform import PHP_EXTENSIONS, extension_name
from tests.apps import tar_gz_archive, zip_archive

INDEX = "<?php echo 1;"


def composer(require=None, **more) -> str:
    return json.dumps({"name": "acme/site", "require": require or {}, **more})


def inspect(content: bytes, runtime: str = "php"):
    return inspect_archive(io.BytesIO(content), runtime)


def refused(content: bytes, runtime: str = "php") -> str:
    with pytest.raises(ArchiveError) as exc:
        inspect(content, runtime)
    return str(exc.value)


def test_the_list_has_the_extensions_common_applications_need_in_composers_names():
    wanted = {"pdo_pgsql", "pgsql", "pdo_mysql", "mysqli", "mbstring", "intl", "xml", "dom", "gd", "zip", "curl"}
    assert wanted | {"zend-opcache", "apcu", "redis", "json", "pdo", "ctype", "openssl"} <= PHP_EXTENSIONS
    assert all(extension_name(name) == name for name in PHP_EXTENSIONS)
    assert not {"pcntl", "readline", "cgi-fcgi", "xdebug"} & PHP_EXTENSIONS


@pytest.mark.parametrize("archive", [zip_archive, tar_gz_archive])
def test_it_accepts_a_site_requiring_extensions_the_runtime_has(archive):
    require = {
        "php": ">=8.1",
        "ext-pdo_pgsql": "*",
        "ext-mbstring": "*",
        "ext-json": "*",
        "ext-zend-opcache": "*",
        "lib-pcre": "*",
        "composer-plugin-api": "^2.0",
        "monolog/monolog": "^3.0",
    }
    assert inspect(archive({"index.php": INDEX, "composer.json": composer(require)})).kind in ("zip", "tar.gz")


@pytest.mark.parametrize("archive", [zip_archive, tar_gz_archive])
def test_it_refuses_a_site_requiring_an_extension_the_runtime_lacks_and_names_it(archive):
    message = refused(archive({"index.php": INDEX, "composer.json": composer({"ext-mongodb": "^1.15"})}))
    assert message.startswith("composer.json requires ext-mongodb, which the php runtime does not have (it has: ")
    assert "pdo_pgsql" in message and "mbstring" in message


def test_it_names_every_missing_extension_once():
    require = {"ext-mongodb": "*", "ext-imagick": "*", "ext-pdo_pgsql": "*", "ext-MongoDB": "*"}
    message = refused(zip_archive({"index.php": INDEX, "composer.json": composer(require)}))
    assert message.startswith("composer.json requires ext-imagick and ext-mongodb, which the php runtime")


def test_extension_names_compare_as_composer_compares_them():
    require = {"ext-PDO": "*", "EXT-MbString": "*", "ext-Zend OPcache": "*", "ext-SimpleXML": "*"}
    inspect(zip_archive({"index.php": INDEX, "composer.json": composer(require)}))
    message = refused(zip_archive({"index.php": INDEX, "composer.json": composer({"Ext-MongoDB": "*"})}))
    assert message.startswith("composer.json requires ext-mongodb,")


def test_only_require_counts_not_require_dev():
    site = {"index.php": INDEX, "composer.json": composer({"ext-intl": "*"}, **{"require-dev": {"ext-xdebug": "*"}})}
    inspect(zip_archive(site))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"require": {"ext-intl": "*",}}', "composer.json is not valid JSON: Expecting property name"),
        ("", "composer.json is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"\xff\xfe{}", "composer.json is not valid UTF-8 text"),
        ('["ext-intl"]', "composer.json is not valid: it must be a JSON object"),
        ('{"require": ["ext-intl"]}', 'composer.json is not valid: "require" must be an object'),
    ],
    ids=["syntax", "empty", "not-utf8", "not-an-object", "require-not-an-object"],
)
def test_it_refuses_a_composer_json_it_cannot_read(text, reason):
    assert refused(tar_gz_archive({"index.php": INDEX, "composer.json": text})).startswith(reason)


def test_it_refuses_a_huge_composer_json():
    text = composer(description=os.urandom(600 * 1024).hex())  # random: no compression bomb
    assert refused(zip_archive({"index.php": INDEX, "composer.json": text})) == "composer.json is larger than 1 MB"


@pytest.mark.parametrize("archive", [zip_archive, tar_gz_archive])
def test_it_reads_the_composer_json_of_a_site_in_one_folder(archive):
    site = {
        "mysite/index.php": INDEX,
        "mysite/composer.json": composer({"ext-mongodb": "*"}),
        "__MACOSX/mysite/._index.php": b"\x00\x05\x16\x07",  # what the Finder adds beside it
    }
    assert refused(archive(site)).startswith("mysite/composer.json requires ext-mongodb,")


def test_it_reads_only_the_composer_json_where_the_site_starts():
    mongodb = composer({"ext-mongodb": "*"})
    # The site starts at the top: the folders' composer.json are their own (libraries, tools).
    inspect(zip_archive({"index.php": INDEX, "lib/composer.json": mongodb, "tools/composer.json": mongodb}))
    inspect(tar_gz_archive({"site/index.php": INDEX, "site/vendor/acme/db/composer.json": mongodb}))
    inspect(zip_archive({"a/index.php": INDEX, "a/composer.json": mongodb, "b/index.php": INDEX}))


def test_other_runtimes_do_not_read_composer_json():
    inspect(zip_archive({"index.html": "hi", "composer.json": "not json"}), "static")
