"""The audit trail: one record per write call and per denied call, kept by the gateway because
CiviCRM's own change log only ever sees the gateway's CiviCRM user.

- :mod:`.record`: what a record holds, built from the parsed call and the answer;
- :mod:`.trail`: the writer thread and the sinks (JSON lines file, stdout, SQLite);
- :mod:`.store`: the SQLite table, its indexes and the queries of ``GET /audit`` and the CLI;
- :mod:`.hooks`: the call sites in the single-call and batch routes;
- :mod:`.command`: ``civicrm-gateway audit``.
"""

from gateway.flow.audit.record import AuditRecord
from gateway.flow.audit.trail import AuditTrail

__all__ = ["AuditRecord", "AuditTrail"]
