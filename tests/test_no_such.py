"""One form for "no such thing", on both sides of the wire: the platform's sentence and the CLI's."""

import pytest

from conpaas_cli import errors as cli_errors
from services import errors

CASES = [
    (("service named", "shp", ["shop", "site"]), "no service named 'shp' (you have: shop, site); did you mean 'shop'?"),
    (
        ("environment named", "staging", ["production", "development"], "site"),
        "site has no environment named 'staging' (it has: production, development)",
    ),
    (("version", "v9", [], "blog"), "blog has no version 'v9' (it has none)"),
    (("version with id", 99, [4, 5], "blog"), "blog has no version with id '99' (it has: 4, 5)"),
    (
        ("service named", "svc", [f"svc{i}" for i in range(12)]),
        "no service named 'svc' (you have: svc0, svc1, svc2, svc3, svc4, svc5, svc6, svc7, svc8, svc9, and 2 more); "
        "did you mean 'svc9' or 'svc8' or 'svc7'?",
    ),
]


@pytest.mark.parametrize(("args", "sentence"), CASES)
def test_it_says_what_was_asked_what_there_is_and_the_close_names(args, sentence):
    assert errors.no_such(*args) == sentence


@pytest.mark.parametrize(("args", "sentence"), CASES)
def test_the_cli_says_it_the_same_way(args, sentence):
    assert cli_errors.no_such(*args) == sentence
