"""gateway.core.expressions: APIv4 SQL expressions parsed into a tree, so every field one reads is
known, and forwarded re-rendered from that tree. Anything outside the grammar is CiviCRM's own
"Unable to parse sql expression" (400).

What deep nesting does to the parser is in tests/hardening/test_nesting.py; what CiviCRM answers
for each function is in tests/sandbox/test_sql_expressions.py. Here: the grammar itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.core import expressions
from gateway.core.errors import GatewayError
from gateway.core.expressions import AGGREGATES, FUNCTIONS, MAX_DEPTH, MAX_LENGTH, MAX_NODES, parse


def refused(text: Any, **kw: bool) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse(text, **kw)
    return caught.value


def unparsable(text: Any, **kw: bool) -> None:
    error = refused(text, **kw)
    assert (error.slug, error.status) == ("civicrm-bad-request", 400)
    assert error.detail.startswith("Unable to parse sql expression: ")


# --- what parses, and how it is forwarded --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical", "fields", "functions"),
    [
        ("display_name", "display_name", ("display_name",), ()),
        ("  contact_id.display_name  ", "contact_id.display_name", ("contact_id.display_name",), ()),
        ("contact_type:label", "contact_type:label", ("contact_type:label",), ()),
        ("Custom_Group.field_1", "Custom_Group.field_1", ("Custom_Group.field_1",), ()),
        ("UPPER(first_name)", "UPPER(first_name)", ("first_name",), ("UPPER",)),
        (
            "CONCAT(first_name,' ',last_name)",
            "CONCAT(first_name, ' ', last_name)",
            ("first_name", "last_name"),
            ("CONCAT",),
        ),
        ("COUNT(*)", "COUNT(*)", ("*",), ("COUNT",)),
        ("COUNT(DISTINCT contact_type)", "COUNT(DISTINCT contact_type)", ("contact_type",), ("COUNT",)),
        ("id*2", "id * 2", ("id",), ()),
        ("-id + 1", "-id + 1", ("id",), ()),
        ("(id+1)/2", "(id + 1) / 2", ("id",), ()),
        ("IF(is_deleted, 'gone', NULL)", "IF(is_deleted, 'gone', NULL)", ("is_deleted",), ("IF",)),
        ("NOW()", "NOW()", (), ("NOW",)),
        ("EXTRACT(YEAR FROM birth_date)", "EXTRACT(YEAR FROM birth_date)", ("birth_date",), ("EXTRACT",)),
        (
            "DATEDIFF(NOW(), created_date)",
            "DATEDIFF(NOW(), created_date)",
            ("created_date",),
            ("DATEDIFF", "NOW"),
        ),
        (
            "GROUP_CONCAT(DISTINCT email ORDER BY email DESC SEPARATOR ', ')",
            "GROUP_CONCAT(DISTINCT email ORDER BY email DESC SEPARATOR ', ')",
            ("email", "email"),
            ("GROUP_CONCAT",),
        ),
        ('"double" = "quoted"', '"double" = "quoted"', (), ()),
        ("id >= 1.5", "id >= 1.5", ("id",), ()),
        # SQL's comment is two minus signs here, and forwarded spaced: no comment reaches SQL
        ("id--1", "id - -1", ("id",), ()),
        ("id -- comment", "id - -comment", ("id", "comment"), ()),
    ],
)
def test_parsed_rendered_and_read(
    text: str, canonical: str, fields: tuple[str, ...], functions: tuple[str, ...]
) -> None:
    expr = parse(text, allow_wildcard="*" in text)
    assert expr.text == canonical
    assert expr.fields == fields
    assert expr.functions == functions
    assert parse(expr.text, allow_wildcard="*" in text).text == canonical  # a fixed point


def test_every_civicrm_function_parses() -> None:
    for name in sorted(FUNCTIONS - {"EXTRACT"}):
        assert parse(f"{name}(id)").functions == (name,)


def test_an_alias() -> None:
    expr = parse("LOWER(last_name)  AS  low")
    assert (expr.alias, expr.text, expr.key) == ("low", "LOWER(last_name) AS low", "low")
    assert parse("id AS ident").key == "ident" and not parse("id AS ident").is_field
    unparsable("UPPER(id) AS u", allow_alias=False)  # where, orderBy, groupBy take none
    unparsable("UPPER(id) AS 9u")
    unparsable("UPPER(id) AS u v")
    unparsable("UPPER(id) as u")  # keywords only in upper case: "as" would be a field


def test_keys_civicrm_gives_a_value() -> None:
    assert parse("display_name").key == "display_name"
    assert parse("UPPER(first_name)").key == "UPPER:first_name"
    assert parse("id + 1").key == "id + 1"
    assert parse("CONCAT(first_name, last_name)").key == "CONCAT(first_name, last_name)"


def test_kinds_of_expression() -> None:
    assert parse("id").is_field and not parse("id").is_aggregate
    assert not parse("UPPER(id)").is_field
    for name in AGGREGATES:
        assert parse(f"ROUND({name}(id))").is_aggregate  # anywhere in the tree
    kinds = [n.kind for n in parse("-(ABS(id) + 'x')").nodes()]
    assert kinds == ["neg", "paren", "binop", "func", "field", "literal"]


def test_wildcards_only_where_they_read_what_select_asks() -> None:
    assert parse("*", allow_wildcard=True).fields == ("*",)
    assert parse("email_primary.*", allow_wildcard=True).is_field
    unparsable("*")
    unparsable("email_primary.*")
    unparsable("UPPER(*)", allow_wildcard=True)
    unparsable("COUNT(email.*)", allow_wildcard=True)
    unparsable("id * *", allow_wildcard=True)


# --- what does not parse -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        None,
        3,
        "SLEEP(5)",  # not one of CiviCRM's functions
        "upper(id)",  # functions in upper case only
        "UPPER(id",
        "UPPER id)",
        "id id",
        "id;",
        "'it''s'",  # a quote inside a literal
        "'back\\slash'",
        "a.b:c:d",
        "UPPER(DISTINCT id)",  # DISTINCT belongs to aggregates
        "EXTRACT(FORTNIGHT FROM birth_date)",
        "EXTRACT(YEAR birth_date)",
        "GROUP_CONCAT(email SEPARATOR email)",
        "1 +",
        "(id",
        "id)",
        "id FROM contact",
    ],
)
def test_outside_the_grammar(text: Any) -> None:
    unparsable(text)


def test_the_bounds() -> None:
    long_name = "a" * MAX_LENGTH
    assert parse(long_name).text == long_name
    unparsable("a" * (MAX_LENGTH + 1))
    # nodes: each "+ 1" adds a literal and a binop
    parse(" + ".join(["1"] * (MAX_NODES // 2)))
    unparsable(" + ".join(["1"] * (MAX_NODES // 2 + 1)))
    parse("(" * MAX_DEPTH + "id" + ")" * MAX_DEPTH)
    error = refused("(" * (MAX_DEPTH + 1) + "id" + ")" * (MAX_DEPTH + 1))
    assert (error.slug, error.status) == ("invalid-request", 400)
    assert f"nested deeper than {MAX_DEPTH} levels" in error.detail


def test_the_refusal_quotes_the_expression_short() -> None:
    error = refused("x" * 2000)
    assert len(error.detail) < 300  # CiviCRM's words, with at most 200 characters of the input


def test_render_is_the_canonical_text_of_a_tree() -> None:
    expr = parse("GROUP_CONCAT(  email  SEPARATOR '|' )")
    assert expressions.render(expr.root) == "GROUP_CONCAT(email SEPARATOR '|')"
