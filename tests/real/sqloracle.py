"""The SQL oracle: which (entity, field) of CiviCRM's database one gateway request made the real
CiviCRM read, from the statements MariaDB ran for it.

How it works (issue 25, "How to verify"):

- MariaDB's general log goes to ``mysql.general_log`` (``log_output = TABLE``) while a
  :class:`GeneralLog` is open; the settings found before are put back on leaving. Concurrent
  oracles serialise on a MariaDB named lock, so one never switches the log off under another.
- The gateway talks to CiviCRM as its own administrator user (:func:`oracle_identity`: a user
  with the ``admin`` role and an API key of its own, created once on the site), so its
  connections are told apart from everyone else's by AuthX's ``WHERE api_key = '<key>'``: other
  sessions may use the same site at the same time.
- The statements every call runs (bootstrap, authentication, settings, caches) are the
  baseline, learnt from trivial allowed calls and compared by fingerprint (literals out).
- The rest are parsed with ``sqlglot`` (MySQL dialect) and every column of every table they read
  (select list, where, join conditions, order, group, having, sub-queries) is mapped to
  ``(entity, field)`` through CiviCRM's own metadata (APIv4 ``Entity.get`` ``table_name``,
  ``getFields`` ``column_name``), fetched once per session with the admin key over REST.

The root MariaDB account (``mysql`` over the unix socket, as the kit's build leaves it) runs
the log queries; ``CIVI_GATEWAY_TEST_MYSQL`` may name another client command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, traverse_scope

from tests.real.kit import Kit

LOCK_NAME = "civicrm_gateway_sqloracle"
ORACLE_USER = "sqloracle"
ORACLE_EXTERNAL_ID = "civicrm-gateway-sqloracle"

# Tables CiviCRM reads for its own configuration and metadata on its own account (option
# lists for pseudoconstants, custom field definitions, caches, menus, roles): reading them is
# not a client reading records. Secret columns are still checked in them.
INFRA_TABLES = frozenset(
    {
        "civicrm_cache",
        "civicrm_setting",
        "civicrm_option_group",
        "civicrm_option_value",
        "civicrm_custom_group",
        "civicrm_custom_field",
        "civicrm_menu",
        "civicrm_domain",
        "civicrm_component",
        "civicrm_extension",
        "civicrm_managed",
        "civicrm_contact_type",
        "civicrm_location_type",
        "civicrm_navigation",
        "civicrm_acl",
        "civicrm_acl_cache",
        "civicrm_acl_contact_cache",
        "civicrm_acl_entity_role",
        "civicrm_role",
        "civicrm_user_role",
        "civicrm_preferences_date",
        "civicrm_search_display",
        "civicrm_search_segment",
        "civicrm_saved_search",
        "civicrm_user_job",
        "civicrm_worldregion",
        "civicrm_country",
        "civicrm_state_province",
        "civicrm_county",
        "civicrm_currency",
        "civicrm_dedupe_rule_group",
        "civicrm_dedupe_rule",
        "civicrm_group_contact_cache",
        "civicrm_translation",
        "civicrm_word_replacement",
        "civicrm_status_pref",
        "civicrm_system_log",
        "civicrm_queue",
        "civicrm_queue_item",
        "civicrm_job",
        "civicrm_mapping",
        "civicrm_mapping_field",
        "civicrm_uf_group",
        "civicrm_uf_field",
        "civicrm_uf_join",
        "civicrm_entity_tag",  # only via tags' own get; kept out of the infra set below if asked
    }
)
# civicrm_entity_tag is data: take it back out (listed above only to say so).
INFRA_TABLES = INFRA_TABLES - {"civicrm_entity_tag"}

# Columns that hold a secret whatever table they are in (compared in lower case): keys,
# checksum hashes, passwords, tokens, PHP session ids and data.
_SECRET_COLUMN = re.compile(
    r"^(api_key|hash|hashed_password|password|passwd|session_id|site_key|private_key|signature|"
    r"secret|client_secret|access_token|refresh_token|token|password_reset_token)$"
    r"|(^|_)(password|passwd|secret|token)(_|$)|_key$"
)
# Whole tables whose every column is a secret (live PHP sessions).
SECRET_TABLES = frozenset({"civicrm_session"})
# ``*_key`` names that are identifiers, not secrets.
_NOT_SECRET = frozenset({"option_key", "entity_key", "cache_key", "name_key", "sort_key", "search_key"})


def is_secret_column(table: str, column: str) -> bool:
    low = column.lower()
    if table.lower() in SECRET_TABLES and low not in ("id", "last_accessed"):
        return True
    if low in _NOT_SECRET:
        return False
    return bool(_SECRET_COLUMN.search(low))


# --- MariaDB, through its command-line client ---------------------------------------------------


def mysql_command() -> list[str]:
    return shlex.split(os.environ.get("CIVI_GATEWAY_TEST_MYSQL", "mysql"))


def mysql(sql: str, *, database: str | None = None, timeout: float = 60) -> list[list[str]]:
    """Rows of tab-separated text (batch mode, escapes undone)."""
    args = [*mysql_command(), "-N", "-B"]
    if database:
        args.append(database)
    done = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mysql failed ({done.returncode}): {done.stderr.strip()[:500]}")
    rows = []
    for line in done.stdout.splitlines():
        rows.append([_unescape(cell) for cell in line.split("\t")])
    return rows


def _unescape(cell: str) -> str:
    if "\\" not in cell:
        return cell
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0", "\\": "\\"}.get(m[1], m[1]), cell)


def mysql_available() -> str | None:
    """None if the oracle can drive the general log; else why not."""
    try:
        rows = mysql("SELECT CURRENT_USER(), @@version")
        mysql("SELECT COUNT(*) FROM mysql.general_log WHERE 1 = 0")
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return f"the SQL oracle needs MariaDB's root client ({' '.join(mysql_command())}): {exc}"
    if not rows:
        return "mysql answered nothing"
    return None


@dataclass
class GeneralLog:
    """MariaDB's general log into ``mysql.general_log`` while open; the settings found are put
    back on close. Holds a named lock meanwhile (another oracle waits for it)."""

    lock_timeout: float = 600
    # The log was off when opened: its table is this oracle's alone (others take the lock
    # first), so it is emptied after each read, which keeps every read short.
    owned: bool = False
    _holder: subprocess.Popen[str] | None = None
    _previous: tuple[str, str] = ("0", "FILE")

    def __enter__(self) -> GeneralLog:
        # A client that takes the lock and keeps its connection (and so the lock) open.
        self._holder = subprocess.Popen(
            [*mysql_command(), "-N", "-B", "--unbuffered"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self._holder.stdin and self._holder.stdout
        self._holder.stdin.write(f"SELECT GET_LOCK('{LOCK_NAME}', {int(self.lock_timeout)});\n")
        self._holder.stdin.flush()
        got = self._holder.stdout.readline().strip()
        if got != "1":
            self._release()
            raise RuntimeError(f"another SQL oracle holds the lock {LOCK_NAME} (GET_LOCK: {got!r})")
        [[on, output]] = mysql("SELECT @@general_log, @@log_output")
        self._previous = (on, output)
        outputs = {o for o in output.split(",") if o and o != "NONE"} if on == "1" else set()
        self.owned = on != "1"
        if self.owned:
            # Nobody logs: the table's old rows are nobody's (oracles take the lock first).
            mysql("TRUNCATE TABLE mysql.general_log")
        mysql(
            f"SET GLOBAL log_output = '{','.join(sorted(outputs | {'TABLE'}))}'; SET GLOBAL general_log = ON"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        on, output = self._previous
        try:
            mysql(
                f"SET GLOBAL log_output = '{output}'; SET GLOBAL general_log = {'ON' if on == '1' else 'OFF'}"
            )
            if on != "1":
                mysql("TRUNCATE TABLE mysql.general_log")
        finally:
            self._release()

    def _release(self) -> None:
        if self._holder is not None:
            with contextlib.suppress(OSError, ValueError):
                assert self._holder.stdin
                self._holder.stdin.write(f"SELECT RELEASE_LOCK('{LOCK_NAME}');\n")
                self._holder.stdin.close()
            try:
                self._holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._holder.kill()
                self._holder.wait()
            self._holder = None

    @staticmethod
    def is_on() -> bool:
        [[on, output]] = mysql("SELECT @@general_log, @@log_output")
        return on == "1" and "TABLE" in output


def db_now() -> str:
    return mysql("SELECT NOW(6)")[0][0]


@dataclass(frozen=True)
class Statement:
    thread: int
    time: str
    sql: str


def statements_since(since: str, *, then_truncate: bool = False) -> list[Statement]:
    """Every query of CiviCRM's account logged after ``since`` (a DB timestamp); the table
    emptied afterwards if asked (by the oracle that owns it)."""
    rows = mysql(
        "SELECT thread_id, event_time, HEX(argument) FROM mysql.general_log "
        f"WHERE event_time > '{since}' AND command_type = 'Query' "
        "AND user_host NOT LIKE 'root%' ORDER BY event_time;"
        + (" TRUNCATE TABLE mysql.general_log;" if then_truncate else "")
    )
    return [
        Statement(int(t), when, bytes.fromhex(hexed).decode("utf-8", "replace")) for t, when, hexed in rows
    ]


# --- REST to CiviCRM with a key (metadata, setup) -----------------------------------------------


def rest4(url: str, key: str, entity: str, action: str, params: dict[str, Any]) -> list[Any]:
    data = urllib.parse.urlencode({"params": json.dumps(params)}).encode()
    request = urllib.request.Request(
        f"{url}/civicrm/ajax/api4/{entity}/{action}",
        data=data,
        headers={"X-Civi-Auth": f"Bearer {key}", "X-Requested-With": "XMLHttpRequest"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        body = json.loads(response.read())
    if "error_message" in body:
        raise RuntimeError(f"{entity}.{action}: {body['error_message']}")
    return list(body["values"])


def rest3(url: str, key: str, entity: str, action: str, params: dict[str, Any]) -> Any:
    """An APIv3 call over CiviCRM's REST end-point; its decoded answer."""
    data = urllib.parse.urlencode({"entity": entity, "action": action, "json": json.dumps(params)}).encode()
    request = urllib.request.Request(
        f"{url}/civicrm/ajax/rest",
        data=data,
        headers={"X-Civi-Auth": f"Bearer {key}", "X-Requested-With": "XMLHttpRequest"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def oracle_identity(kit: Kit) -> str:
    """The API key of the oracle's own administrator (user ``sqloracle``, role ``admin``): made
    once on the site, with ``cv``, if it is not there."""
    found = rest4(
        kit.url,
        kit.admin_key,
        "Contact",
        "get",
        {"select": ["id", "api_key"], "where": [["external_identifier", "=", ORACLE_EXTERNAL_ID]]},
    )
    if found:
        cid, key = found[0]["id"], found[0].get("api_key")
    else:
        key = None
        cid = rest4(
            kit.url,
            kit.admin_key,
            "Contact",
            "create",
            {
                "values": {
                    "contact_type": "Individual",
                    "first_name": "SQL",
                    "last_name": "Oracle",
                    "external_identifier": ORACLE_EXTERNAL_ID,
                }
            },
        )[0]["id"]
    if not key:
        key = secrets.token_hex(16)
        rest4(
            kit.url,
            kit.admin_key,
            "Contact",
            "update",
            {"where": [["id", "=", cid]], "values": {"api_key": key}},
        )
    users = rest4(
        kit.url, kit.admin_key, "User", "get", {"select": ["id"], "where": [["username", "=", ORACLE_USER]]}
    )
    if not users:
        script = (
            "<?php\n"
            f'$p = ["cms_name" => "{ORACLE_USER}", "cms_pass" => bin2hex(random_bytes(12)), '
            f'"email" => "{ORACLE_USER}@example.org", "notify" => FALSE, "contact_id" => {int(cid)}];\n'
            '$uid = \\CRM_Core_BAO_CMSUser::create($p, "email");\n'
            '$role = \\Civi\\Api4\\Role::get(FALSE)->addWhere("name", "=", "admin")->execute()->single();\n'
            '\\Civi\\Api4\\UserRole::create(FALSE)->addValue("user_id", $uid)'
            '->addValue("role_id", $role["id"])->execute();\n'
            'echo $uid, "\\n";\n'
        )
        path = kit.prefix / "log" / "sqloracle-user.php"
        path.parent.mkdir(exist_ok=True)
        path.write_text(script)
        subprocess.run(
            [str(kit.cv), f"--cwd={kit.site}", "scr", str(path)], check=True, capture_output=True, timeout=300
        )
    return str(key)


# --- metadata: tables and columns to entities and fields ----------------------------------------


@dataclass(frozen=True)
class Column:
    entity: str
    field: str
    input_type: str | None = None


@dataclass
class Metadata:
    """Every table's columns, and the (entity, field) CiviCRM says each one is."""

    # table -> column -> (canonical entity, field)
    columns: dict[str, dict[str, Column]]
    # table -> entities that use it (Contact, Individual, Organization, Household...)
    entities_of_table: dict[str, list[str]]
    # entity -> its table
    table_of: dict[str, str]
    # table -> every column MariaDB has (for SELECT * and qualification)
    db_columns: dict[str, list[str]]

    @classmethod
    def fetch(cls, kit: Kit) -> Metadata:
        entities = rest4(
            kit.url,
            kit.admin_key,
            "Entity",
            "get",
            {
                "select": ["name", "table_name"],
                "chain": {
                    "f": [
                        "$name",
                        "getFields",
                        {
                            "select": ["name", "column_name", "table_name", "input_type"],
                            "where": [["column_name", "IS NOT NULL"]],
                            "checkPermissions": False,
                        },
                    ]
                },
            },
        )
        table_of: dict[str, str] = {}
        entities_of: dict[str, list[str]] = {}
        for row in entities:
            if row.get("table_name"):
                table_of[row["name"]] = row["table_name"]
                entities_of.setdefault(row["table_name"], []).append(row["name"])
        canonical = {table: _canonical(table, names) for table, names in entities_of.items()}
        columns: dict[str, dict[str, Column]] = {}
        for row in entities:
            table = row.get("table_name")
            for f in row.get("f") or ():
                f_table = f.get("table_name") or table
                if not f_table or not f.get("column_name"):
                    continue
                # A custom field lives in its group's table; its entity is the one it extends.
                owner = canonical.get(table, row["name"]) if table else row["name"]
                if f_table == table and row["name"] != owner:
                    continue  # Individual's fields are Contact's
                columns.setdefault(f_table, {}).setdefault(
                    f["column_name"], Column(owner, f["name"], f.get("input_type"))
                )
        db_columns: dict[str, list[str]] = {}
        for table, column in mysql(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'civicrm' ORDER BY table_name, ordinal_position"
        ):
            db_columns.setdefault(table, []).append(column)
        return cls(columns, entities_of, table_of, db_columns)

    def canonical(self, entity: str) -> str:
        """Contact for Individual (the entity its table belongs to)."""
        table = self.table_of.get(entity)
        if table is None:
            return entity
        return _canonical(table, self.entities_of_table.get(table, [entity]))

    def column(self, table: str, column: str) -> Column | None:
        found = self.columns.get(table, {}).get(column)
        if found is None and table.startswith("civicrm_value_"):
            return None
        return found

    @cached_property
    def schema(self) -> dict[str, object]:
        return {t: dict.fromkeys(cols, "text") for t, cols in self.db_columns.items()}


def _canonical(table: str, names: Iterable[str]) -> str:
    names = list(names)
    stem = table.removeprefix("civicrm_").replace("_", "")
    for name in names:
        if name.lower() == stem:
            return name
    return sorted(names, key=len)[0]


# --- statements to reads ----------------------------------------------------------------------

_STRING = re.compile(r"'(?:[^'\\]|\\.|'')*'|\"(?:[^\"\\]|\\.)*\"")
_NUMBER = re.compile(r"\b\d+(\.\d+)?\b")


def fingerprint(sql: str) -> str:
    """The statement with its literals out: what a baseline statement looks like every time."""
    text = _STRING.sub("?", sql)
    text = _NUMBER.sub("?", text)
    text = re.sub(r"civicrm_tmp_\w+", "civicrm_tmp_?", text)
    return re.sub(r"\s+", " ", text).strip()


_SKIP = re.compile(
    r"^\s*(SET\s|SHOW\s|BEGIN|COMMIT|ROLLBACK|START TRANSACTION|SAVEPOINT|RELEASE SAVEPOINT|"
    r"SELECT\s+(GET_LOCK|RELEASE_LOCK|IS_FREE_LOCK|@@|DATABASE\(\)|VERSION\(\)|FOUND_ROWS\(\)|LAST_INSERT_ID\(\)|"
    r"NOW\(\)|CONNECTION_ID\(\))|/\*!\d+ SET|DROP TEMPORARY|DROP TABLE IF EXISTS civicrm_tmp_|"
    r"TRUNCATE TABLE civicrm_tmp_)",
    re.IGNORECASE,
)
# CiviCRM writes ``LEFT JOIN (`civicrm_email` `e`) ON``; sqlglot wants it without the brackets.
_JOIN_PARENS = re.compile(r"JOIN\s*\(\s*(`[^`]+`|\w+)\s+(`[^`]+`|\w+)\s*\)", re.IGNORECASE)
_MENU_PATH = re.compile(r"FROM\s+civicrm_menu\s+WHERE\s+path\s+in\s*\(\s*'([^']*)'", re.IGNORECASE)


@dataclass
class Reads:
    """What a set of statements read and wrote."""

    fields: set[tuple[str, str]] = field(default_factory=set)  # (entity, field)
    secrets: set[tuple[str, str]] = field(default_factory=set)  # (table, column)
    unmapped: set[tuple[str, str]] = field(default_factory=set)  # (table or alias, column)
    tables: set[str] = field(default_factory=set)  # data tables read (not infra)
    infra: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)  # tables written
    unparsed: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)

    def merge(self, other: Reads) -> None:
        self.fields |= other.fields
        self.secrets |= other.secrets
        self.unmapped |= other.unmapped
        self.tables |= other.tables
        self.infra |= other.infra
        self.writes |= other.writes
        self.unparsed += other.unparsed
        self.statements += other.statements


class Analyser:
    def __init__(self, meta: Metadata) -> None:
        self.meta = meta
        self._cache: dict[str, Reads] = {}

    def reads(self, sqls: Iterable[str]) -> Reads:
        out = Reads()
        for sql in sqls:
            if _SKIP.match(sql):
                continue
            one = self._cache.get(sql)
            if one is None:
                one = self._cache[sql] = self._analyse(sql)
            out.merge(one)
        return out

    def _analyse(self, sql: str) -> Reads:
        out = Reads(statements=[sql])
        try:
            tree = sqlglot.parse_one(_JOIN_PARENS.sub(r"JOIN \1 \2", sql), dialect="mysql")
        except SqlglotError:
            return self._fallback(sql, out)
        if tree is None:
            return out
        for node in tree.find_all(exp.Insert, exp.Update, exp.Delete):
            target = node.this
            table = target.this if isinstance(target, exp.Schema) else target
            if isinstance(table, exp.Table):
                out.writes.add(table.name)
        try:
            tree = qualify(
                tree,
                schema=self.meta.schema,
                dialect="mysql",
                validate_qualify_columns=False,
                quote_identifiers=False,
            )
        except SqlglotError:
            pass  # the scopes below still resolve what they can
        except Exception:  # sqlglot's optimizer can fail on odd input: read it by name then
            return self._fallback(sql, out)
        try:
            scopes = traverse_scope(tree)
        except Exception:
            return self._fallback(sql, out)
        for scope in scopes:
            for table in scope.tables:
                self._table(table.name, out)
            for column in scope.columns:
                self._column(scope, column, out)
            for star in scope.expression.find_all(exp.Star):
                # Stars qualify() could not expand (unknown table): every column of each source.
                if star.find_ancestor(exp.Count):
                    continue
                for source in scope.sources.values():
                    if isinstance(source, exp.Table):
                        for name in self.meta.db_columns.get(source.name, []):
                            self._add(source.name, name, out)
        return out

    def _table(self, table: str, out: Reads) -> None:
        if table in INFRA_TABLES or table.startswith("civicrm_tmp_") or "." in table:
            out.infra.add(table)
        else:
            out.tables.add(table)

    def _column(self, scope: Scope, column: exp.Column, out: Reads) -> None:
        name = column.name
        if not name or name == "*":
            return
        alias = column.table
        current: Scope | None = scope
        while current is not None:
            if alias:
                source = current.sources.get(alias)
            else:
                tables = [s for s in current.sources.values() if isinstance(s, exp.Table)]
                source = tables[0] if len(tables) == 1 else None
            if isinstance(source, exp.Table):
                self._add(source.name, name, out)
                return
            if source is not None:
                return  # a derived table: its own scope reports its columns
            current = current.parent
        if alias or name.lower() not in self._select_aliases(scope):
            out.unmapped.add((alias or "?", name))
            if is_secret_column("", name):
                out.secrets.add((alias or "?", name))

    @staticmethod
    def _select_aliases(scope: Scope) -> set[str]:
        select = scope.expression
        if not isinstance(select, exp.Select):
            return set()
        return {e.alias.lower() for e in select.expressions if isinstance(e, exp.Alias)}

    def _add(self, table: str, name: str, out: Reads) -> None:
        if is_secret_column(table, name):
            out.secrets.add((table, name))
        if table in INFRA_TABLES or table.startswith("civicrm_tmp_"):
            return
        mapped = self.meta.column(table, name)
        if mapped is None:
            out.unmapped.add((table, name))
        else:
            out.fields.add((mapped.entity, mapped.field))

    def _fallback(self, sql: str, out: Reads) -> Reads:
        """Unparsable: every ``table`` word and every secret-looking word, by name."""
        out.unparsed.append(sql)
        bare = _STRING.sub("''", sql)
        for word in set(re.findall(r"`?([A-Za-z_][A-Za-z0-9_]*)`?", bare)):
            if word.startswith("civicrm_") and word in self.meta.db_columns:
                self._table(word, out)
            elif is_secret_column("", word):
                out.secrets.add(("?", word))
        return out


# --- one request's statements --------------------------------------------------------------------


@dataclass
class Capture:
    """The statements of the oracle identity's CiviCRM requests since a mark, by thread."""

    threads: dict[int, list[str]]
    paths: dict[int, str]  # the menu path CiviCRM routed each thread's request to

    def statements(self) -> list[str]:
        return [s for sqls in self.threads.values() for s in sqls]

    def is_metadata(self, thread: int) -> bool:
        """A metadata request of the gateway itself (Entity.get, getFields, getActions)."""
        path = self.paths.get(thread, "")
        parts = path.split("/")
        return path.startswith("civicrm/ajax/api4/") and (
            (len(parts) > 3 and parts[3] == "Entity")
            or (len(parts) > 4 and parts[4].lower() in ("getfields", "getactions"))
        )

    def forwarded(self) -> dict[int, list[str]]:
        """Threads that ran a client's call (not the gateway's metadata look-ups)."""
        return {t: s for t, s in self.threads.items() if not self.is_metadata(t)}


class Oracle:
    """Marks, captures and reads for one identity's API key."""

    def __init__(self, kit: Kit, key: str, meta: Metadata, *, owned: bool = False) -> None:
        self.kit = kit
        self.owned = owned
        self.key = key
        self.meta = meta
        self.analyser = Analyser(meta)
        self.baseline: set[str] = set()
        self.implicit: dict[str, set[str]] = {}  # entity -> fields CiviCRM reads on its own
        # (entity, field) an APIv3 call reads whatever it is asked (v3's query builder)
        self.implicit_v3: set[tuple[str, str]] = set()
        self._mark = db_now()

    def mark(self) -> None:
        """Statements before now are not the next request's."""
        self._mark = db_now()

    def capture(self, settle: float = 0.0) -> Capture:
        if settle:
            time.sleep(settle)
        rows = statements_since(self._mark, then_truncate=self.owned)
        threads: dict[int, list[str]] = {}
        for row in rows:
            threads.setdefault(row.thread, []).append(row.sql)
        needle = f"api_key = '{self.key}'"
        mine = {t: sqls for t, sqls in threads.items() if any(needle in s for s in sqls)}
        paths = {}
        for t, sqls in mine.items():
            for s in sqls:
                found = _MENU_PATH.search(s)
                if found:
                    paths[t] = found[1]
                    break
        if rows:
            self._mark = rows[-1].time
        return Capture(mine, paths)

    # baseline ------------------------------------------------------------------------------
    def learn_baseline(self, captures: Iterable[Capture]) -> None:
        """The statements that trivial calls of *different* entities all ran (so the calls'
        own queries are not in it), added to what was learnt before."""
        common: set[str] | None = None
        for capture in captures:
            prints = {fingerprint(sql) for sql in capture.statements()}
            common = prints if common is None else common & prints
        self.baseline |= common or set()

    def beyond_baseline(self, sqls: Iterable[str]) -> list[str]:
        return [s for s in sqls if fingerprint(s) not in self.baseline and not _SKIP.match(s)]

    def reads(self, capture: Capture, *, forwarded_only: bool = False) -> Reads:
        threads = capture.forwarded() if forwarded_only else capture.threads
        return self.analyser.reads(self.beyond_baseline(s for sqls in threads.values() for s in sqls))

    def calibrate(self, entity: str, capture: Capture) -> None:
        """The columns a trivial ``select id`` call of ``entity`` read: CiviCRM's own filters
        (``is_deleted``, ``is_template``...), allowed wherever the entity is."""
        reads = self.reads(capture)
        canonical = self.meta.canonical(entity)
        self.implicit.setdefault(canonical, set()).update(f for e, f in reads.fields if e == canonical)

    def calibrate_v3(self, capture: Capture) -> None:
        """What a trivial APIv3 ``get`` with ``return=id`` read besides its entity's ``id``."""
        self.implicit_v3 |= self.reads(capture).fields


def secret_values(kit: Kit, key: str) -> set[str]:
    """Every credential value in the database now (keys, checksum hashes, password hashes),
    and the gateway's own keys: none may ever appear in an answer."""
    values = {kit.admin_key, kit.staff_key, key, kit.ids.get("SITE_KEY", "")}
    for sql in (
        "SELECT api_key FROM civicrm.civicrm_contact WHERE api_key IS NOT NULL AND api_key <> ''",
        "SELECT hash FROM civicrm.civicrm_contact WHERE hash IS NOT NULL AND hash <> ''",
        "SELECT hashed_password FROM civicrm.civicrm_uf_match WHERE hashed_password IS NOT NULL",
    ):
        values |= {row[0] for row in mysql(sql) if row and row[0]}
    return {v for v in values if len(v) >= 8}


def leaked_values(text: str, values: Iterable[str]) -> list[str]:
    low = text.lower()
    return [v for v in values if v.lower() in low]


@contextlib.contextmanager
def general_log() -> Iterator[GeneralLog]:
    with GeneralLog() as log:
        yield log
