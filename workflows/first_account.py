"""The first account of an installation, made on the console while no user exists, so that a
newcomer needs no extra command (README, First steps).

Who may make it: a request from the machine itself (a loopback peer that no proxy relays), or one
that brings the one-time code `manage.py up` prints at start while no user exists. The code is
kept only as its SHA-256, in a 0600 file under CONPAAS_HOME; making the account deletes it, and it
is worth nothing once any user exists. Of requests racing to make the account, one wins
(workflows.models.FirstAccount)."""

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from services.choices import Outcome
from services.errors import Conflict, ConpaasError
from services.models import Event
from workflows.models import FirstAccount

log = logging.getLogger("conpaas.accounts")

CODE_FILE = "first-account-code"
# 16 characters that cannot be misread (no 0/O, 1/I/L): 80 bits, typed from a terminal.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_GROUPS, CODE_GROUP_LENGTH = 4, 4
# Headers a proxy adds when it relays someone else's request: such a request is not local,
# whatever its peer address (a reverse proxy on this machine connects from loopback).
PROXY_HEADERS = ("HTTP_FORWARDED", "HTTP_X_FORWARDED_FOR", "HTTP_X_REAL_IP")
FROM_THIS_MACHINE = "from this machine"
WITH_THE_CODE = "with the one-time code"


class FirstAccountRefused(ConpaasError):
    http_status = 403


class FirstAccountExists(Conflict):
    pass


def is_open() -> bool:
    """Whether the first account may still be made: no user exists, and none was made here."""
    return not get_user_model().objects.exists() and not FirstAccount.objects.exists()


def code_path() -> Path:
    return Path(settings.CONPAAS_HOME) / CODE_FILE


def _digest(code: str) -> str:
    # Compared on its letters only: spaces, dashes and case as typed do not matter.
    letters = "".join(c for c in code.upper() if c.isalnum())
    return hashlib.sha256(letters.encode()).hexdigest()


def issue_code() -> str | None:
    """A new one-time code while the first account may still be made (any earlier one dies);
    None once a user exists."""
    discard_code()
    if not is_open():
        return None
    groups = ("".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUP_LENGTH)) for _ in range(CODE_GROUPS))
    code = "-".join(groups)
    fd = os.open(code_path(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(_digest(code) + "\n")
    return code


def discard_code() -> None:
    code_path().unlink(missing_ok=True)


def code_matches(code: str) -> bool:
    try:
        stored = code_path().read_text().strip()
    except FileNotFoundError:
        return False
    return bool(code.strip()) and hmac.compare_digest(stored, _digest(code))


def is_local(meta: dict) -> bool:
    """A request from the machine itself: its peer is a loopback address, and no proxy relays it."""
    try:
        peer = ipaddress.ip_address(meta.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped:
        peer = peer.ipv4_mapped
    return peer.is_loopback and not any(meta.get(header) for header in PROXY_HEADERS)


def admission(meta: dict, code: str = "") -> str:
    """How this request may make the first account (FROM_THIS_MACHINE or WITH_THE_CODE), or
    FirstAccountRefused saying why not."""
    if is_local(meta):
        return FROM_THIS_MACHINE
    if code_matches(code):
        return WITH_THE_CODE
    address = meta.get("REMOTE_ADDR", "")
    log.warning("first account refused to %s: %s", address, "wrong one-time code" if code.strip() else "no code")
    if not code_path().exists():
        raise FirstAccountRefused(
            "The first account can be made only from the machine ConPaaS runs on, or with the one-time code "
            "manage.py up prints at start; none is active now: restart it to get one."
        )
    raise FirstAccountRefused(
        "The first account can be made only from the machine ConPaaS runs on, or with the one-time code "
        "`./run up` (manage.py up) printed at start. "
        + ("That code is wrong." if code.strip() else "This request comes from elsewhere and brings no code.")
    )


def create(username: str, email: str, password: str, meta: dict, code: str = ""):
    """Make the first account, a staff superuser, if `meta` (the request's) and `code` admit it.

    FirstAccountRefused: not admitted; FirstAccountExists: a user exists, or another request made
    the first account meanwhile. Either way nothing is stored."""
    how = admission(meta, code)
    if not is_open():
        raise FirstAccountExists("An account exists already: sign in with it.")
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_superuser(username=username, email=email, password=password)
            # The claim: a racing request that got this far too fails here, and its user goes with it.
            FirstAccount.objects.create(id=1, user=user)
    except IntegrityError:
        raise FirstAccountExists("Another account was made a moment ago: sign in with it.") from None
    discard_code()
    Event.record(
        None,
        "first-account",
        f"first account {username} (staff) made {how}, from {meta.get('REMOTE_ADDR', 'an unknown address')}",
        Outcome.SUCCEEDED,
        actor=user,
    )
    return user
