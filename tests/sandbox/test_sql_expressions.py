"""APIv4 SQL expressions in the sandbox: CiviCRM's function set, key naming, aliases in
having/orderBy, equations, literals and CiviCRM's errors (facts: tests/fixtures/samples/
rest-query-language.txt and civicrm-core's Civi/Api4/Query classes)."""

from __future__ import annotations

import pytest

from gateway.sandbox import sqlexpr
from gateway.sandbox.engine import Sandbox
from gateway.sandbox.errors import CiviError


@pytest.fixture
def people(sb: Sandbox) -> list[int]:
    rows = [
        ("Ada", "Lovelace", "1815-12-10", 1),
        ("Alan", "Turing", "1912-06-23", 2),
        ("Grace", "Hopper", "1906-12-09", 1),
    ]
    return [
        sb.api4(
            "Contact",
            "create",
            {
                "values": {
                    "contact_type": "Individual",
                    "first_name": first,
                    "last_name": last,
                    "birth_date": born,
                    "gender_id": g,
                }
            },
        )["values"][0]["id"]
        for first, last, born, g in rows
    ]


def _get(sb: Sandbox, params: dict, entity: str = "Contact") -> list[dict]:
    return sb.api4(entity, "get", params)["values"]


def test_the_function_set_is_civicrms() -> None:
    assert len(sqlexpr.FUNCTIONS) == 38
    assert sqlexpr.parse("LOWER(first_name)").key == "LOWER:first_name"
    assert sqlexpr.parse("CONCAT(first_name, ' ', last_name)").key == "CONCAT:first_name_last_name"
    assert sqlexpr.parse("(id + 1)").key == "id___1"
    assert sqlexpr.parse("COUNT(id) AS my-total").key == "my_total"


def test_string_functions_and_key_names(sb: Sandbox, people: list[int]) -> None:
    ada = people[0]
    rec = _get(
        sb,
        {
            "select": [
                "UPPER(last_name) AS shout",
                "LOWER(first_name)",
                "CONCAT_WS('-', first_name, nick_name, last_name) AS ws",
                "LEFT(last_name, 4) AS l",
                "RIGHT(last_name, 3) AS r",
                "SUBSTRING(last_name, 2, 3) AS sub",
                "REPLACE(last_name, 'love', 'LOVE') AS rep",
                "COALESCE(nick_name, first_name) AS nick",
                "IF((gender_id = 1), 'F', 'M') AS g",
                "ISNULL(nick_name) AS no_nick",
                "NULLIF(first_name, 'Ada') AS n",
                "CONCAT(first_name, nick_name) AS null_concat",
            ],
            "where": [["id", "=", ada]],
        },
    )
    assert rec == [
        {
            "id": ada,
            "shout": "LOVELACE",
            "LOWER:first_name": "ada",
            "ws": "Ada-Lovelace",
            "l": "Love",
            "r": "ace",
            "sub": "ove",
            "rep": "Lovelace",
            "nick": "Ada",
            "g": "F",
            "no_nick": True,
            "n": None,
            "null_concat": None,
        }
    ]


def test_date_and_math_functions(sb: Sandbox, people: list[int]) -> None:
    alan = people[1]
    rec = _get(
        sb,
        {
            "select": [
                "YEAR(birth_date) AS y",
                "MONTH(birth_date) AS m",
                "QUARTER(birth_date) AS q",
                "DAYOFWEEK(birth_date) AS dow",
                "EXTRACT(DAY FROM birth_date) AS d",
                "DATEDIFF('1912-07-01', birth_date) AS diff",
                "ABS(-3) AS a",
                "ROUND(2.567, 1) AS rnd",
                "GREATEST(1, 5, 3) AS big",
                "LEAST(4, 2) AS small",
                "(gender_id * 10 + 1) AS eq",
                "(gender_id > 1) AS cmp",
            ],
            "where": [["id", "=", alan]],
        },
    )
    assert rec == [
        {
            "id": alan,
            "y": 1912,
            "m": 6,
            "q": 2,
            "dow": 1,
            "d": "23",  # as a real 5.77 answers: no declared type, MySQL's text
            "diff": 8,
            "a": 3.0,
            "rnd": 2.6,
            "big": "5",
            "small": "2",
            "eq": 21.0,
            "cmp": True,
        }
    ]


def test_aggregates_group_by_having_and_order_on_aliases(sb: Sandbox, people: list[int]) -> None:
    rows = _get(
        sb,
        {
            "select": [
                "gender_id",
                "COUNT(id) AS total",
                "GROUP_CONCAT(first_name) AS names",
                "GROUP_CONCAT(DISTINCT last_name SEPARATOR '|') AS joined",
                "MIN(birth_date) AS oldest",
            ],
            "where": [["id", "IN", people]],
            "groupBy": ["gender_id"],
            "having": [["total", ">=", 1]],
            "orderBy": {"total": "DESC"},
        },
    )
    assert rows[0]["gender_id"] == 1 and rows[0]["total"] == 2
    assert sorted(rows[0]["names"]) == ["Ada", "Grace"]
    assert sorted(rows[0]["joined"].split("|")) == ["Hopper", "Lovelace"]
    assert rows[0]["oldest"] == "1815-12-10"
    assert rows[1] == {
        "gender_id": 2,
        "total": 1,
        "names": ["Alan"],
        "joined": "Turing",
        "oldest": "1912-06-23",
    }
    # an aggregate without groupBy: one row, no id
    assert _get(sb, {"select": ["COUNT(id) AS n"], "where": [["id", "IN", people]]}) == [{"n": 3}]
    assert _get(sb, {"select": ["COUNT(id)"], "where": [["id", "IN", people]]}) == [{"COUNT:id": 3}]
    with pytest.raises(
        CiviError,
        match=r"^Invalid expression in HAVING clause: 'nope'. "
        r"Must use a value from SELECT clause.$",
    ):
        _get(sb, {"select": ["COUNT(id) AS n"], "having": [["nope", ">", 1]]})


def test_expressions_in_where_and_field_comparison(sb: Sandbox, people: list[int]) -> None:
    rows = _get(sb, {"select": ["id"], "where": [["UPPER(last_name)", "=", "TURING"]]})
    assert rows == [{"id": people[1]}]
    sb.api4("Contact", "update", {"where": [["id", "=", people[2]]], "values": {"nick_name": "Grace"}})
    rows = _get(sb, {"select": ["id"], "where": [["first_name", "=", "nick_name", True]]})
    assert rows == [{"id": people[2]}]


def test_errors_as_civicrm_words_them(sb: Sandbox, people: list[int]) -> None:
    cases = [
        (
            {"select": ["LENGTH(last_name) AS len"]},
            "Unable to parse sql expression: LENGTH(last_name) AS len",
        ),
        ({"select": ["upper(last_name)"]}, "Sql function must be uppercase."),
        ({"select": ["UPPER(last_name) AS first_name"]}, "Cannot use existing field name as alias"),
        ({"select": ["UPPER(last_name, first_name)"]}, "Too many arguments given for SQL function UPPER"),
        ({"select": ["LEFT(last_name)"]}, "Missing param 2 for SQL function LEFT"),
        ({"select": ["id"], "limit": -1}, "DB Error: syntax error"),
        ({"select": ["id"], "offset": -2, "limit": 1}, "DB Error: syntax error"),
        ({"where": [["id"]]}, "Illegal operator"),
    ]
    for params, message in cases:
        with pytest.raises(CiviError) as info:
            _get(sb, params)
        assert info.value.message == message, params


def test_unknown_fields_in_expressions_are_dropped_like_fields(sb: Sandbox, people: list[int]) -> None:
    rows = _get(sb, {"select": ["UPPER(no_such) AS x", "last_name"], "where": [["id", "=", people[0]]]})
    assert rows == [{"id": people[0], "last_name": "Lovelace"}]


def test_staff_cannot_read_api_key_through_a_function(sb: Sandbox, people: list[int]) -> None:
    staff = sb.ensure_staff()
    rows = sb.api4(
        "Contact",
        "get",
        {"select": ["UPPER(api_key) AS k", "last_name"], "where": [["id", "=", 2]]},
        check_permissions=True,
        contact_id=staff["contact_id"],
    )["values"]
    assert rows == [{"id": 2, "last_name": "Admin"}]
    admin = sb.api4(
        "Contact",
        "get",
        {"select": ["UPPER(api_key) AS k"], "where": [["id", "=", 2]]},
        check_permissions=True,
        contact_id=2,
    )["values"]
    assert admin == [{"id": 2, "k": sb.admin_api_key.upper()}]


def test_php_arrays_in_every_list_param(sb: Sandbox, people: list[int]) -> None:
    """JSON objects are PHP arrays: clauses, joins and records given as objects work."""
    ada = people[0]
    sb.api4("Email", "create", {"values": {"contact_id": ada, "email": "ada@x.org"}})
    rows = _get(
        sb,
        {
            "select": {"a": "id", "b": "e.email"},
            "join": {"x": {"0": "Email AS e", "1": "INNER", "2": {"l": "e.contact_id", "o": "=", "r": "id"}}},
            "where": {"w": {"0": "id", "1": "=", "2": ada}},
        },
    )
    assert rows == [{"id": ada, "e.email": "ada@x.org"}]
    saved = sb.api4("Contact", "save", {"records": [["Individual"]]})["values"][0]
    assert saved["contact_type"] == "Individual" and saved["0"] is None
    # having may repeat a select expression instead of naming its key
    rows = _get(
        sb,
        {
            "select": ["gender_id", "COUNT(id)"],
            "groupBy": ["gender_id"],
            "where": [["id", "IN", people]],
            "having": [["COUNT(id)", ">", 1]],
        },
    )
    assert rows == [{"gender_id": 1, "COUNT:id": 2}]


def test_staff_clauses_on_api_key_are_ignored(sb: Sandbox, people: list[int]) -> None:
    """Real 5.77 for a user without key permissions: a where clause on api_key is silently
    ignored (every contact comes back), in an expression or a join condition too."""
    staff = sb.ensure_staff()["contact_id"]
    every = sorted(r["id"] for r in sb.api4("Contact", "get", {"select": ["id"]})["values"])
    probes = [
        {"where": [["api_key", "=", sb.admin_api_key]]},
        {"where": [["UPPER(api_key)", "LIKE", "A%"]]},
        {"where": [["first_name", "=", "api_key", True]]},
        {"join": [["Contact AS c", "INNER", ["c.id", "=", "id"], ["c.api_key", "IS NOT NULL"]]]},
        {"join": [["Contact AS c", "INNER", ["c.id", "=", "id"], ["c.api_key", "=", "'x'"]]]},
    ]
    for extra in probes:
        got = sb.api4(
            "Contact", "get", {"select": ["id"], **extra}, check_permissions=True, contact_id=staff
        )["values"]
        assert sorted(r["id"] for r in got) == every, extra
    # ordering by it would reveal it too: ignored, so records come in id order
    got = sb.api4(
        "Contact",
        "get",
        {"select": ["id"], "orderBy": {"api_key": "DESC"}},
        check_permissions=True,
        contact_id=staff,
    )["values"]
    assert [r["id"] for r in got] == every
    # the admin's clause applies
    got = sb.api4(
        "Contact",
        "get",
        {"select": ["id"], "where": [["api_key", "=", sb.admin_api_key]]},
        check_permissions=True,
        contact_id=2,
    )["values"]
    assert got == [{"id": 2}]


def test_expressions_too_deep_are_refused_not_crashing(sb: Sandbox) -> None:
    deep = "UPPER(" * 5000 + "last_name" + ")" * 5000
    with pytest.raises(CiviError, match=r"^Unable to parse sql expression: UPPER\(UPPER"):
        _get(sb, {"select": [deep]})
    long_sum = "(" + " + ".join(["id"] * 3000) + ")"
    with pytest.raises(CiviError, match=r"^DB Error: syntax error$"):
        _get(sb, {"select": [long_sum]})
    with pytest.raises(CiviError, match=r"^DB Error: syntax error$"):
        _get(sb, {"where": [["COUNT(id)", ">", 1]]})  # an aggregate in WHERE


def test_fields_and_literals_with_aliases(sb: Sandbox, people: list[int]) -> None:
    alan = people[1]
    rows = _get(
        sb,
        {
            "select": ["gender_id:label AS g", "first_name AS f", "'x' AS lit", "3 AS n", "NULL AS z"],
            "where": [["id", "=", alan]],
        },
    )
    # a bare number comes back as MySQL's text, as on a real 5.77 site
    assert rows == [{"id": alan, "g": "Male", "f": "Alan", "lit": "x", "n": "3", "z": None}]


def test_an_aggregate_in_order_by_alone_aggregates_every_row(sb: Sandbox, people: list[int]) -> None:
    """CiviCRM 5.77 on MariaDB answers ``orderBy: {"COUNT(id)": "ASC"}`` without ``groupBy``
    with one row (every row aggregated; checked on the real site), not a DB error."""
    rows = _get(sb, {"select": ["id"], "orderBy": {"COUNT(id)": "ASC"}, "limit": 3})
    assert len(rows) == 1 and set(rows[0]) == {"id"}
