"""Fast bulk seeding of sandbox contacts, for benchmarks and large-export tests.

The API path (``Contact.save``) validates and derives every field, which takes minutes for
100,000 records. This writes the same columns straight into the SQLite tables in one
transaction (``executemany``), with the derived fields (display and sort names) filled in the way
the engine fills them, so the API reads the rows as if they had been created through it.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.sandbox.engine import Sandbox

_FIRST = ("Maria", "James", "Aisha", "Chen", "Olga", "Pedro", "Fatima", "Liam", "Sofia", "Kenji")
_LAST = ("Garcia", "Smith", "Okafor", "Wang", "Ivanova", "Silva", "Haddad", "Murphy", "Rossi")


def seed_contacts(
    sandbox: Sandbox, count: int, *, seed: int = 7, prefix: str = "Bulk", with_email: bool = True
) -> tuple[int, int]:
    """Add ``count`` Individuals (and a primary email each); returns the first and last id."""
    rng = random.Random(seed)  # noqa: S311 (reproducible data, not secrets)
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    with sandbox._lock:
        conn = sandbox._conn
        start = conn.execute("SELECT COALESCE(MAX(id), 0) FROM civicrm_contact").fetchone()[0] + 1
        rows = []
        emails = []
        for n in range(count):
            cid = start + n
            first = f"{prefix}{rng.choice(_FIRST)}"
            last = rng.choice(_LAST)
            rows.append((cid, first, last, f"{first} {last}", f"{last}, {first}", now, now))
            emails.append((cid, f"{first.lower()}.{cid}@example.org"))
        conn.execute("BEGIN")
        try:
            conn.executemany(
                "INSERT INTO civicrm_contact (id, contact_type, first_name, last_name, "
                "display_name, sort_name, do_not_email, do_not_phone, do_not_mail, do_not_sms, "
                "do_not_trade, is_opt_out, is_deceased, is_deleted, created_date, "
                "modified_date, preferred_mail_format) VALUES "
                "(?, 'Individual', ?, ?, ?, ?, 0, 0, 0, 0, 0, 0, 0, 0, ?, ?, 'Both')",
                rows,
            )
            if with_email:
                conn.executemany(
                    "INSERT INTO civicrm_email (contact_id, location_type_id, email, is_primary, "
                    "is_billing, on_hold, is_bulkmail) VALUES (?, 1, ?, 1, 0, 0, 0)",
                    emails,
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return start, start + count - 1
