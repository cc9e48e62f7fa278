"""A real PHP application, unchanged: DokuWiki (Debian's package), which keeps its pages in its own
data/ folder, saves a page and shows it again after its instance was restarted."""

import io
import json
import os
import signal
import zipfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from conpaas_common.waiting import wait_until

pytestmark = pytest.mark.integration

CODE = Path("/usr/share/dokuwiki")
CONFIG = Path("/etc/dokuwiki")
DATA = Path("/var/lib/dokuwiki/data")
# DokuWiki's own defaults, but for its data (in the site's tree, as upstream ships it, not in
# Debian's /var/lib/dokuwiki) and no sign-in: anyone edits.
TEXT = "Saved through ConPaaS and kept across restarts"
LOCAL_PHP = "<?php\n$conf['title'] = 'ConPaaS wiki';\n$conf['savedir'] = './data';\n$conf['useacl'] = 0;\n"


def dokuwiki_archive() -> bytes:
    """DokuWiki as upstream lays it out (conf/ and data/ in its own tree), from Debian's files."""
    assert CODE.is_dir(), "dokuwiki is not installed: ./run setup installs it"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:

        def add(tree: Path, prefix: str, skip=()) -> None:
            for folder, _dirs, files in os.walk(tree, followlinks=True):  # Debian links conf and lib
                relative = Path(folder).relative_to(tree)
                archive.writestr(f"{(Path('wiki', prefix, relative)).as_posix()}/", b"")  # empty ones too
                for name in files:
                    if (relative / name).as_posix() not in skip and (Path(folder) / name).exists():
                        archive.write(Path(folder) / name, Path("wiki", prefix, relative, name).as_posix())

        # Debian's preload.php points DokuWiki at /etc/dokuwiki; upstream's DokuWiki has none.
        add(CODE, "", skip={"inc/preload.php"})
        add(CONFIG, "conf", skip={"local.php"})
        add(DATA, "data")
        archive.writestr("wiki/conf/local.php", LOCAL_PHP)
    return buffer.getvalue()


class EditForm(HTMLParser):
    """The fields of DokuWiki's edit form (its security token among them)."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}
        self.inside = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("id") == "dw__editform"
        elif self.inside and tag == "input" and attrs.get("type") == "hidden":
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False


def save_page(url: str, page: str, text: str) -> None:
    browser = requests.Session()  # DokuWiki ties its form's token to its session cookie
    edit = browser.get(f"{url}doku.php", params={"id": page, "do": "edit"}, timeout=30)
    assert edit.status_code == 200, edit.text[:2000]
    form = EditForm()
    form.feed(edit.text)
    assert "sectok" in form.fields, edit.text[:2000]
    saved = browser.post(
        f"{url}doku.php",
        params={"id": page},
        data={**form.fields, "wikitext": text, "do[save]": "Save"},
        timeout=30,
    )
    assert saved.status_code == 200 and text in saved.text, saved.text[:2000]


def status_of(url: str) -> int | None:
    """The status of a GET, or None while no answer comes (a busy machine, a router in between)."""
    try:
        return requests.get(url, timeout=10).status_code
    except requests.RequestException:
        return None


def test_dokuwiki_keeps_a_saved_page_across_a_restart_of_its_instance(control_plane):
    api = control_plane.client("dora")
    with api.serving("wiki", "php", dokuwiki_archive(), "dokuwiki.zip") as (service, version):
        url = service["url"]
        assert "ConPaaS wiki" in requests.get(url, timeout=30).text  # index.php sends on to doku.php

        save_page(url, "conpaas", TEXT)
        # What DokuWiki's .htaccess files close, nginx does not serve either.
        assert requests.get(f"{url}data/pages/conpaas.txt", timeout=10).status_code == 404
        assert requests.get(f"{url}conf/local.php", timeout=10).status_code == 404

        # The instance stops while nobody watches; the restarted control plane starts it again.
        node = service["nodes"][0]["name"]
        state = json.loads((control_plane.home / "nodes" / node / "state.json").read_text())
        instance = f"{node}-v{version['id']}"
        control_plane.stop()
        try:
            os.kill(state["instances"][instance]["pid"], signal.SIGTERM)  # its nginx
            wait_until(lambda: status_of(url) == 503, 30, message="the wiki to go down")
        finally:
            control_plane.start()
        wait_until(lambda: status_of(url) == 200, 60, message="the wiki to come back")
        page = requests.get(f"{url}doku.php", params={"id": "conpaas"}, timeout=30)
        assert page.status_code == 200 and TEXT in page.text
        restarted = json.loads((control_plane.home / "nodes" / node / "state.json").read_text())
        assert restarted["instances"][instance]["pid"] != state["instances"][instance]["pid"]
