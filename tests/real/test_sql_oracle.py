"""Property test whose oracle is the SQL the real CiviCRM ran (issue 25, "How to verify").

Random restricted policies, random calls weaving field names, SQL expressions and secrets into
every param position of every action in the gateway's grammar (select, where, having, orderBy,
groupBy, join conditions and their values, chains with their 4th element, APIv3 filters,
``return``, ``options.sort`` and the legacy sort keys, ``getlist``'s field params,
``autocomplete``'s ``savedSearch``/``display``/``key``, batches, GET with chains), sent through a
real gateway process on its HTTP backend that acts as a CiviCRM administrator (the worst case).
For every call:

- 2xx (or a CiviCRM 4xx, which was forwarded): every column of every table CiviCRM's SQL read
  maps to a field the client's policy allows; no secret column is read; the answer holds only
  the keys the call asked for (selected fields and aliases, chain names; chained results lists);
- a refusal by the gateway (4xx of its own): nothing forwarded, no SQL beyond the baseline;
- any answer: no secret value (API keys, checksum hashes, password hashes) in it, no 5xx.

Seeded (``CIVI_GATEWAY_SQLORACLE_SEED``; printed), a fixed number of calls
(``CIVI_GATEWAY_SQLORACLE_CALLS``, 900) within a deadline (``CIVI_GATEWAY_SQLORACLE_SECONDS``, 60 s),
so it stays under 90 s in CI. The default seed is fixed (:data:`CI_SEED`), so a suite run
answers for the change under test and nothing else; ``CIVI_GATEWAY_SQLORACLE_SEED=random``
explores (run it before merging a change to the parser or the policy; a seed that finds
something becomes the new default once fixed).
"""

from __future__ import annotations

import fnmatch
import json
import os
import random
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest

from gateway.flow.clients import hash_token
from tests.conftest import GatewayProcess
from tests.real import sqloracle as so
from tests.real.kit import SUMMARY, Kit, require_kit

pytestmark = pytest.mark.slow

T = TypeVar("T")
SEED_ENV = "CIVI_GATEWAY_SQLORACLE_SEED"
CALLS_ENV = "CIVI_GATEWAY_SQLORACLE_CALLS"
SECONDS_ENV = "CIVI_GATEWAY_SQLORACLE_SECONDS"
# The last seed that found a violation (an APIv3 Contact.get answering the fields it filtered on).
CI_SEED = 263283876

# The gateway's own refusals: the call must not have reached CiviCRM.
GATEWAY_REFUSALS = frozenset(
    {
        "invalid-request",
        "gateway-policy-denied",
        "unknown-field",
        "method-not-allowed",
        "unsupported-media-type",
        "payload-too-large",
        "route-not-found",
        "unknown-api",
        "unauthenticated",
        "cross-origin-denied",
    }
)

# --- the grammar's vocabulary -------------------------------------------------------------------

FIELDS: dict[str, list[str]] = {
    "Contact": [
        "id",
        "display_name",
        "first_name",
        "last_name",
        "sort_name",
        "contact_type",
        "job_title",
        "birth_date",
        "source",
        "external_identifier",
        "gender_id",
        "created_date",
        "organization_name",
    ],
    "Email": ["id", "contact_id", "email", "is_primary", "location_type_id", "on_hold"],
    "Phone": ["id", "contact_id", "phone", "phone_type_id"],
    "Address": ["id", "contact_id", "city", "street_address", "country_id"],
    "Activity": ["id", "subject", "activity_type_id", "activity_date_time", "status_id"],
    "Note": ["id", "entity_id", "entity_table", "note", "subject"],
    "Group": ["id", "name", "title"],
    "User": ["id", "username", "contact_id", "uf_name"],
    "Session": ["id", "last_accessed"],
}
SECRETS: dict[str, list[str]] = {
    "Contact": ["api_key", "hash"],
    "User": ["hashed_password", "password", "password_reset_token"],
    "Session": ["session_id", "data"],
}
# Other names of an entity (CiviCRM's contact types are Contact) and entities it joins to.
ALIASES = {"Contact": ["Individual", "Organization", "Household"]}
FK = {"Email": "contact_id", "Phone": "contact_id", "Address": "contact_id", "User": "contact_id"}
IMPLICIT = [
    "email_primary.email",
    "email_primary.contact_id.api_key",
    "address_primary.city",
    "contact_id.hash",
]
SECRET_SETTINGS = ["recaptchaPrivateKey", "mapAPIKey", "geoAPIKey", "mailing_backend", "site_key", "credKeys"]
PLAIN_SETTINGS = ["contact_default_language", "lcMessages", "dateformatDatetime", "max_attachments"]
DATA_ENTITIES = ["Contact", "Email", "Phone", "Address", "Activity", "Note", "Group"]
ALL_ENTITIES = [*DATA_ENTITIES, "Individual", "Organization", "User", "Session"]
FUNCTIONS = [
    "UPPER({})",
    "LOWER({})",
    "CONCAT({}, '-')",
    "COALESCE({}, 'x')",
    "SUBSTRING({}, 1, 2)",
    "LEFT({}, 2)",
]


@dataclass
class Client:
    name: str
    token: str
    policy: dict[str, Any]


def random_policy(rng: random.Random, n: int) -> Client:
    labels = [f"v4:{e}.get" for e in DATA_ENTITIES] + [
        "v3:Contact.get",
        "v3:Email.get",
        "v3:Contact.getlist",
        "v3:Contact.getvalue",
        "v4:Contact.autocomplete",
        "v4:Setting.get",
        "v4:Contact.get*",
    ]
    allow = sorted(set(rng.sample(labels, rng.randint(1, 5))) | {"v4:Contact.get"})
    policy: dict[str, Any] = {"allow": allow, "read_only": rng.random() < 0.85}
    if rng.random() < 0.2:
        policy["deny"] = ["v4:Contact.delete", "v4:Contact.update"]
    if rng.random() < 0.6:
        fields: dict[str, list[str]] = {}
        for entity in ("Contact", "Email"):
            if rng.random() < 0.7:
                base = {"id"} | ({"contact_id"} if entity in FK else set())
                fields[entity] = sorted(base | set(rng.sample(FIELDS[entity], rng.randint(1, 3))))
        if fields:
            policy["fields"] = fields
    if rng.random() < 0.4:
        policy["max_limit"] = rng.choice([2, 5, 50])
    token = f"cgw_sqloracle-{n}-{rng.getrandbits(64):016x}"
    return Client(f"c{n}", token, policy)


NARROWEST = {"allow": ["v4:Contact.get"], "read_only": True, "fields": {"Contact": ["id", "display_name"]}}


def clients_toml(clients: list[Client]) -> str:
    lines = []
    for c in clients:
        lines.append(f"[clients.{c.name}]")
        lines.append(f'token_sha256 = "{hash_token(c.token)}"')
        for key, value in c.policy.items():
            if key == "fields":
                inner = ", ".join(f"{e} = {json.dumps(v)}" for e, v in value.items())
                lines.append(f"fields = {{{inner}}}")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


# --- random calls -------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    body: Any = None
    query: dict[str, str] | None = None
    # what the answer may hold: version, entity, action, params (None: a batch)
    calls: list[tuple[int, str, str, dict[str, Any], str | None]] = field(default_factory=list)

    def describe(self) -> str:
        return f"{self.method} {self.path} {json.dumps(self.body or self.query)[:600]}"


class Grammar:
    """Random calls for one client: mostly within its policy (so that answers come back and
    are checked), with a share of hostile elements (secrets, other entities, expressions)."""

    def __init__(self, rng: random.Random, policy: dict[str, Any] | None = None) -> None:
        self.rng = rng
        self.policy = policy or {}
        self.hostile = 0.3

    def for_client(self, policy: dict[str, Any]) -> Grammar:
        grammar = Grammar(self.rng, policy)
        grammar.hostile = self.rng.choice([0.02, 0.1, 0.3, 0.6])
        return grammar

    def entity(self, choices: list[str], version: int = 4) -> str:
        """One of ``choices``, preferring those the policy allows a get of."""
        allowed = [
            e
            for e in choices
            if any(
                fnmatch.fnmatchcase(f"v{version}:{e}.get".lower(), p.lower())
                for p in self.policy.get("allow", [])
            )
        ]
        if allowed and self.rng.random() > self.hostile:
            return self.pick(allowed)
        return self.pick(choices)

    def pick(self, seq: list[T]) -> T:
        return self.rng.choice(seq)

    def base(self, entity: str) -> str:
        return "Contact" if entity in ALIASES["Contact"] else entity

    def field(self, entity: str) -> str:
        base = self.base(entity)
        listed: list[str] | None = self.policy.get("fields", {}).get(base)
        if self.rng.random() > self.hostile:
            return self.pick(listed or FIELDS.get(base, ["id"]))
        secret_bias = 0.5
        r = self.rng.random()
        if r < secret_bias and SECRETS.get(base):
            return self.pick(SECRETS[base])
        if r < secret_bias + 0.1 and base == "Contact":
            return self.pick(IMPLICIT)
        if r < secret_bias + 0.15:
            return self.pick(SECRETS["Contact"])  # a secret name on another entity
        return self.pick(FIELDS.get(base, ["id"]))

    def expr(self, entity: str) -> str:
        f = self.field(entity)
        r = self.rng.random() / max(self.hostile, 0.1)
        if r < 0.25:
            return self.pick(FUNCTIONS).format(f)
        if r < 0.3:
            return f"GROUP_CONCAT({f})"
        if r < 0.35:
            return f"{f}:label"
        return f

    def value(self, entity: str) -> Any:
        if self.rng.random() > self.hostile:
            return self.pick(["a%", 2, "Smith", ["Alice", "Bob"], 1])
        return self.pick(
            [
                "a%",
                2,
                "'5b'",
                f"LEFT({self.field(entity)}, 2)",
                f"c.{self.pick(SECRETS['Contact'])}",
                ["x", "y"],
                "",
                "$id",
                "[(",
                {"0": "x"},
            ]
        )

    def clause(self, entity: str, depth: int = 0) -> list[Any]:
        if depth < 2 and self.rng.random() < 0.15:
            return [self.pick(["OR", "AND", "NOT"]), [self.clause(entity, depth + 1) for _ in range(2)]]
        left = self.expr(entity)
        op = self.pick(
            ["=", "LIKE", "IN", "IS NOT NULL", "<>", ">"]
            + (["REGEXP", "CONTAINS"] if self.rng.random() < self.hostile else [])
        )
        if op == "IS NOT NULL":
            return [left, op]
        if self.rng.random() < 0.2 * self.hostile:
            return [left, op, self.field(entity), True]
        value = self.value(entity)
        if op == "IN" and not isinstance(value, list):
            value = [value]
        return [left, op, value]

    def join(self, entity: str) -> list[Any]:
        target = self.pick(["Email", "Contact", "Phone", "Address", "User", "Session", "Individual"])
        alias = self.pick(["e", "c", "j"])
        conds: list[Any] = []
        if target in FK:
            conds.append([f"{alias}.contact_id", "=", "id"])
        else:
            conds.append([f"{alias}.id", "=", self.pick(["id", "contact_id"])])
        if self.rng.random() < 0.6:
            conds.append(
                [
                    self.pick(["'5b'", f"{alias}.{self.field(target)}", "id"]),
                    "=",
                    self.pick(
                        [f"LEFT({alias}.api_key, 2)", f"{alias}.hash", "'x'", f"{alias}.{self.field(target)}"]
                    ),
                ]
            )
        return [f"{target} AS {alias}", self.pick(["LEFT", "INNER"]), *conds]

    def v4_get(self, entity: str, depth: int = 0) -> dict[str, Any]:
        p: dict[str, Any] = {}
        r = self.rng.random
        if r() < 0.8:
            sel = [self.expr(entity) for _ in range(self.rng.randint(1, 3))]
            sel = [s if "(" not in s or r() < 0.3 else f"{s} AS x{i}" for i, s in enumerate(sel)]
            p["select"] = sel
        if r() < 0.5:
            p["where"] = [self.clause(entity) for _ in range(self.rng.randint(1, 2))]
        if r() < 0.15:
            p["groupBy"] = [self.expr(entity)]
        if r() < 0.1:
            p["having"] = [self.clause(entity)]
        if r() < 0.25:
            p["orderBy"] = {self.expr(entity): self.pick(["ASC", "DESC"])}
        if r() < 0.25 * (self.hostile + 0.3):
            p["join"] = [self.join(entity)]
        if depth < 2 and r() < 0.3:
            target = self.entity(["Email", "Contact", "Phone", "Note", "Individual"])
            sub = self.v4_get(target, depth + 1)
            link_clause = ["contact_id" if target in FK else "id", "=", "$id"]
            where = sub.setdefault("where", [])
            if isinstance(where, dict):
                where[str(len(where))] = link_clause
            else:
                where.append(link_clause)
            link: list[Any] = [target, "get", sub]
            if r() < 0.5:
                link.append(self.pick([self.field(target), 0, "id", "api_key", "hash"]))
            p["chain"] = {"ch": link}
        if r() < 0.5:
            p["limit"] = self.pick([1, 3, 10, 100, 0])
        if r() < 0.1:  # PHP-array coercion: objects where lists belong
            for key in ("select", "where"):
                if key in p:
                    p[key] = {str(i): v for i, v in enumerate(p[key])}
        return p

    def v3_get(self, entity: str) -> dict[str, Any]:
        p: dict[str, Any] = {}
        r = self.rng.random
        if r() < 0.85:
            p["return"] = [self.field(entity) for _ in range(self.rng.randint(1, 3))]
            if r() < 0.3:
                p["return"] = ",".join(p["return"])
        if r() < 0.4:
            p[self.field(entity)] = self.pick(["x", {"LIKE": "a%"}, 2])
        if r() < 0.25:
            p["options"] = {"sort": f"{self.field(entity)} {self.pick(['ASC', 'DESC'])}", "limit": 5}
        if r() < 0.25:
            p[self.pick(["sort", "option_sort", "option.sort", "options.sort"])] = self.field(entity)
        if r() < 0.15:
            p["api.Email.get"] = {"return": [self.field("Email")]}
        return p

    def request(self) -> Request:
        kind = self.rng.random()
        if kind < 0.45:
            entity = self.entity(ALL_ENTITIES)
            params = self.v4_get(entity)
            return Request("POST", f"/v4/{entity}/get", params, calls=[(4, entity, "get", params, None)])
        if kind < 0.6:
            entity = self.entity(["Contact", "Email"], 3)
            params = self.v3_get(entity)
            return Request("POST", f"/v3/{entity}/get", params, calls=[(3, entity, "get", params, None)])
        if kind < 0.65:
            params = {
                self.pick(
                    [
                        "id_field",
                        "label_field",
                        "description_field",
                        "search_field",
                        "image_field",
                        "color_field",
                    ]
                ): self.field("Contact"),
                "input": "a",
            }
            if self.rng.random() < 0.4:
                params["extra"] = [self.field("Contact")]
            return Request(
                "POST", "/v3/Contact/getlist", params, calls=[(3, "Contact", "getlist", params, None)]
            )
        if kind < 0.7:
            params = {"id": 2, "return": self.field("Contact")}
            return Request(
                "POST", "/v3/Contact/getvalue", params, calls=[(3, "Contact", "getvalue", params, None)]
            )
        if kind < 0.76:
            entity = self.pick(["Contact", "Individual", "User"])
            params = {"input": "a"}
            if self.rng.random() < 0.5:
                params["key"] = self.field(entity)
            if self.rng.random() < 0.6:
                params["savedSearch"] = {
                    "api_entity": self.pick(["Contact", "User", "Session"]),
                    "api_params": {"version": 4, "select": [self.field(entity) for _ in range(2)]},
                }
                params["display"] = {
                    "type": "autocomplete",
                    "settings": {"columns": [{"type": "field", "key": self.field(entity)}]},
                }
            return Request(
                "POST",
                f"/v4/{entity}/autocomplete",
                params,
                calls=[(4, entity, "autocomplete", params, None)],
            )
        if kind < 0.8:
            params = {"select": self.rng.sample([*SECRET_SETTINGS, *PLAIN_SETTINGS], 2)}
            return Request("POST", "/v4/Setting/get", params, calls=[(4, "Setting", "get", params, None)])
        if kind < 0.88:
            members = {}
            calls: list[tuple[int, str, str, dict[str, Any], str | None]] = []
            for i in range(self.rng.randint(2, 3)):
                entity = self.entity(ALL_ENTITIES)
                params = self.v4_get(entity, depth=1)
                members[f"m{i}"] = [entity, "get", params]
                calls.append((4, entity, "get", params, f"m{i}"))
            return Request("POST", "/v4/batch", members, calls=calls)
        if kind < 0.94:
            # GET whose chain writes (nothing real: no contact has id -1)
            params = {
                "select": ["id"],
                "limit": 1,
                "chain": {
                    "w": [
                        self.pick(["Contact", "Individual", "Organization"]),
                        self.pick(["update", "delete", "Update"]),
                        {
                            "where": [["id", "=", -1]],
                            **({"values": {"source": "sqloracle"}} if self.rng.random() < 0.5 else {}),
                        },
                    ]
                },
            }
            return Request(
                "GET",
                "/v4/Contact/get",
                None,
                {"params": json.dumps(params)},
                [(4, "Contact", "get", params, None)],
            )
        # a write for a (mostly) read-only client, on no record
        entity = self.pick(["Contact", "Individual", "Organization", "Household"])
        action = self.pick(["delete", "update", "DELETE"])
        params = {"where": [["id", "=", -1]]}
        if action.lower() == "update":
            params["values"] = {"source": "sqloracle"}
        return Request("POST", f"/v4/{entity}/{action}", params, calls=[(4, entity, action, params, None)])


# --- the checks ---------------------------------------------------------------------------------


class PolicyModel:
    """What a policy lets a client read, by canonical entity (the oracle's own reading)."""

    def __init__(
        self,
        policy: dict[str, Any],
        meta: so.Metadata,
        implicit: dict[str, set[str]],
        implicit_v3: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        self.implicit_v3 = implicit_v3
        self.allow = [p.lower() for p in policy.get("allow", ["*"])]
        self.deny = [p.lower() for p in policy.get("deny", [])]
        self.fields = {meta.canonical(e): set(v) for e, v in policy.get("fields", {}).items()}
        self.meta = meta
        self.implicit = implicit

    def _names(self, canonical: str) -> list[str]:
        table = self.meta.table_of.get(canonical)
        return self.meta.entities_of_table.get(table, [canonical]) if table else [canonical]

    def entity_allowed(self, canonical: str) -> bool:
        for name in self._names(canonical):
            for version in ("v4", "v3"):
                label = f"{version}:{name}".lower()
                if any(
                    fnmatch.fnmatchcase(label, p.rsplit(".", 1)[0] if "." in p else p) for p in self.allow
                ):
                    if not any(fnmatch.fnmatchcase(f"{label}.get", p) for p in self.deny):
                        return True
        return False

    def field_allowed(self, canonical: str, name: str, *, v3: bool = False) -> bool:
        if so.is_secret_column("", name):
            return False
        if v3 and (canonical, name) in self.implicit_v3 and self.entity_allowed("Contact"):
            return True
        if not self.entity_allowed(canonical):
            return False
        if name == "id" or name in self.implicit.get(canonical, set()):
            return True
        allowed = self.fields.get(canonical)
        return allowed is None or name in allowed


def asked_keys(version: int, entity: str, action: str, params: dict[str, Any]) -> tuple[set[str], bool]:
    """The keys an answer record may hold, and whether any allowed field may be among them
    (no select, or ``*``)."""
    if version == 3:
        ret = params.get("return")
        names = set(ret.split(",") if isinstance(ret, str) else ret or [])
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in entity).lstrip("_")
        chains = {k for k in params if k[:4].lower() in ("api.", "api_")}
        return names | chains | {"id", f"{snake}_id", "contact_is_deleted"}, not names
    select = params.get("select")
    if isinstance(select, dict):
        select = list(select.values())
    keys: set[str] = set()
    wildcard = not select
    for item in select or []:
        if not isinstance(item, str):
            continue
        text, _, alias = item.partition(" AS ")
        keys.add(alias.strip() or text.strip())
        if not alias and "(" in text:
            keys.add(default_key(text))
        if text.strip().endswith("*"):
            wildcard = True
    chain = params.get("chain")
    if isinstance(chain, dict):
        keys |= set(chain)
    return keys, wildcard


def default_key(expression: str) -> str:
    """CiviCRM's key for an expression without alias: ``CONCAT(id, '-')`` -> ``CONCAT:id``."""
    name = expression.split("(", 1)[0].strip().upper()
    bare = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", "", expression.split("(", 1)[1])
    words = [
        m[1]
        for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_.:]*)\s*(\(?)", bare)
        if not m[2] and m[1].upper() not in _SQL_WORDS
    ]
    return f"{name}:{'_'.join(words)}"


_SQL_WORDS = frozenset({"DISTINCT", "AS", "SEPARATOR", "NULL", "AND", "OR", "NOT", "IS", "IN", "LIKE"})


def walk_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_keys(item)


@dataclass
class Violations:
    items: list[str] = field(default_factory=list)
    kinds: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, request: Request, detail: str) -> None:
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.kinds[kind] <= 4:
            self.items.append(f"[{kind}] {request.describe()}\n    -> {detail[:700]}")


# --- fixtures ----------------------------------------------------------------------------------


@dataclass
class Rig:
    kit: Kit
    oracle: so.Oracle
    gateway: GatewayProcess
    http: httpx.Client
    clients: list[Client]
    secrets: set[str]
    seed: int


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    kit = require_kit()
    reason = so.mysql_available()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    key = so.oracle_identity(kit)
    meta = so.Metadata.fetch(kit)
    wanted = os.environ.get(SEED_ENV) or str(CI_SEED)
    seed = random.SystemRandom().randrange(2**32) if wanted == "random" else int(wanted)
    print(f"\nSQL oracle seed: {seed} (rerun with {SEED_ENV}={seed})")
    rng = random.Random(seed)
    clients = [random_policy(rng, n) for n in range(10)]
    clients.append(Client("narrowest", "cgw_sqloracle-narrowest-5e1f0c2a9b", NARROWEST))
    tmp = tmp_path_factory.mktemp("sqloracle")
    path = tmp / "clients.toml"
    path.write_text(clients_toml(clients))
    with so.GeneralLog() as log:
        oracle = so.Oracle(kit, key, meta, owned=log.owned)
        calibrate(oracle, kit, key)
        gateway = GatewayProcess(
            {
                "CIVI_GATEWAY_BACKEND": "http",
                "CIVI_GATEWAY_HTTP_URL": kit.url,
                "CIVI_GATEWAY_HTTP_API_KEY": key,
                "CIVI_GATEWAY_HTTP_TIMEOUT": "60",
                "CIVI_GATEWAY_CLIENTS_FILE": str(path),
                "CIVI_GATEWAY_STATE_DIR": str(tmp / "state"),
            },
            tmp,
        ).wait_ready(60)
        try:
            with httpx.Client(base_url=gateway.url, timeout=90) as http:
                yield Rig(kit, oracle, gateway, http, clients, so.secret_values(kit, key), seed)
        finally:
            gateway.stop()


def calibrate(oracle: so.Oracle, kit: Kit, key: str) -> None:
    """Baseline from trivial calls of different entities; then each entity's own implicit reads."""
    captures = []
    for entity in ("Contact", "Email", "Activity", "Phone"):
        oracle.mark()
        so.rest4(kit.url, key, entity, "get", {"select": ["id"], "limit": 1})
        captures.append(oracle.capture())
    oracle.learn_baseline(captures)
    for entity in ALL_ENTITIES:
        oracle.mark()
        so.rest4(kit.url, key, entity, "get", {"select": ["id"], "limit": 1})
        oracle.calibrate(entity, oracle.capture())
    for entity in ("Contact", "Email"):
        oracle.mark()
        so.rest3(kit.url, key, entity, "get", {"return": "id", "options": {"limit": 1}})
        oracle.calibrate_v3(oracle.capture())


def send(rig: Rig, client: Client, request: Request) -> httpx.Response:
    headers = {"Authorization": f"Bearer {client.token}"}
    if request.method == "GET":
        return rig.http.get(request.path, params=request.query, headers=headers)
    return rig.http.post(request.path, json=request.body, headers=headers)


def check_answer(
    request: Request, response: httpx.Response, model: PolicyModel, meta: so.Metadata, found: Violations
) -> None:
    try:
        body = response.json()
    except ValueError:
        return
    for key in walk_keys(body):
        last = key.rpartition(".")[2].split(":")[0]
        if so.is_secret_column("", last):
            found.add("secret-key-in-answer", request, f"key {key!r}")
    for version, entity, action, params, member in request.calls:
        records = body
        if member is not None:
            entry = body.get(member) if isinstance(body, dict) else None
            if not isinstance(entry, dict) or entry.get("status") != 200:
                continue
            records = entry.get("values")
        if entity == "Setting":
            for row in records if isinstance(records, list) else []:
                name = row.get("name") if isinstance(row, dict) else None
                if name in SECRET_SETTINGS:
                    found.add("secret-setting-answered", request, f"setting {name!r}")
            continue
        if action.lower() != "get" or not isinstance(records, list):
            continue
        allowed, wildcard = asked_keys(version, entity, action, params)
        canonical = meta.canonical(entity)
        for row in records:
            if not isinstance(row, dict):
                found.add("answer-shape", request, f"record is {type(row).__name__}")
                continue
            for key, value in row.items():
                if key in allowed or (version == 4 and key == "id"):  # APIv4 adds the id
                    if version == 4 and isinstance(params.get("chain"), dict) and key in params["chain"]:
                        # keyed by the 4th element (index) when one is given: its field is
                        # checked as a read; otherwise a list
                        if not isinstance(value, list) and len(params["chain"][key]) <= 3:
                            found.add("chain-not-a-list", request, f"{key}: {json.dumps(value)[:200]}")
                    continue
                if wildcard and model.field_allowed(canonical, key.split(":")[0]):
                    continue
                if version == 3 and f"{key}_id" in allowed:
                    continue  # APIv3's label of an asked option field: gender for gender_id
                found.add("unasked-key", request, f"key {key!r} (asked {sorted(allowed)})")


def test_sql_oracle(rig: Rig) -> None:
    rng = random.Random(rig.seed + 1)
    calls = int(os.environ.get(CALLS_ENV, "900"))
    deadline = time.monotonic() + float(os.environ.get(SECONDS_ENV, "60"))
    oracle, meta = rig.oracle, rig.oracle.meta
    models = {c.name: PolicyModel(c.policy, meta, oracle.implicit, oracle.implicit_v3) for c in rig.clients}
    grammar = Grammar(rng)
    found = Violations()
    stats: dict[str, int] = {}
    oracle.mark()
    oracle.capture()  # drop the gateway's start-up requests
    sent = 0
    timing = {"gateway": 0.0, "log": 0.0}
    for _ in range(calls):
        if time.monotonic() > deadline:
            break
        client = rng.choice(rig.clients)
        request = grammar.for_client(client.policy).request()
        model = models[client.name]
        started = time.monotonic()
        response = send(rig, client, request)
        sent += 1
        timing["gateway"] += time.monotonic() - started
        started = time.monotonic()
        capture = oracle.capture()
        timing["log"] += time.monotonic() - started
        status = response.status_code
        slug = ""
        if response.headers.get("content-type", "").startswith("application/problem+json"):
            slug = str(response.json().get("type", "")).rpartition("/")[2]
        stats[f"{status} {slug}".strip()] = stats.get(f"{status} {slug}".strip(), 0) + 1
        text = response.text
        leaked = so.leaked_values(text, rig.secrets)
        if leaked:
            found.add(
                "secret-value-in-answer", request, f"{status}: {len(leaked)} secret value(s) in {text[:300]}"
            )
        if status >= 500:
            found.add(f"5xx {slug}", request, text[:300])
        forwarded = capture.forwarded()
        reads = oracle.reads(capture, forwarded_only=True)
        if status < 500 and 400 <= status and slug in GATEWAY_REFUSALS:
            # The gateway's own APIv3 metadata look-ups (getfields, getactions) go to the same
            # civicrm/ajax/rest as calls do; they read configuration tables only. A refused
            # call must have read or written no data at all.
            touched = oracle.reads(capture, forwarded_only=True) if forwarded else None
            if touched is not None and (touched.tables or touched.writes or touched.secrets):
                paths = sorted({capture.paths.get(t, "?") for t in forwarded})
                found.add("refused-but-forwarded", request, f"{status} {slug}; CiviCRM ran {paths}")
            continue
        if reads.secrets:
            found.add("secret-column-read", request, f"{status} {slug}: {sorted(reads.secrets)}")
        v3 = any(version == 3 for version, *_ in request.calls)
        bad = sorted(f"{e}.{f}" for e, f in reads.fields if not model.field_allowed(e, f, v3=v3))
        if bad:
            found.add("read-outside-policy", request, f"{status} {slug}: {bad}")
        data_writes = {t for t in reads.writes if t not in so.INFRA_TABLES and t not in so.SECRET_TABLES}
        if data_writes and client.policy.get("read_only"):
            found.add("read-only-client-wrote", request, f"{status}: {sorted(data_writes)}")
        if 200 <= status < 300:
            check_answer(request, response, model, meta, found)
    assert so.GeneralLog.is_on(), "MariaDB's general log was switched off during the run"
    print(f"sent {sent} calls; answers: {dict(sorted(stats.items()))}")
    SUMMARY.append(f"SQL oracle: seed {rig.seed}, {sent} calls, violations {dict(found.kinds) or 'none'}")
    print(f"seconds in the gateway {timing['gateway']:.1f}, reading the log {timing['log']:.1f}")
    print(f"violations by kind: {found.kinds}")
    assert sent >= min(calls, 50), f"only {sent} calls within the deadline"
    assert not found.items, f"{sum(found.kinds.values())} violations ({found.kinds}):\n" + "\n".join(
        found.items
    )
