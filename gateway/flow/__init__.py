"""The call flow: one call from any face (HTTP route, batch member, export page, command line,
MCP tool) through authentication, rate limits, preparation (parse, names, validation,
policy), idempotency and audit to a backend, and its records back, shaped and checked.

May import: :mod:`gateway.core`, :mod:`gateway.backends`, :mod:`gateway.telemetry`. Never a
face (:mod:`gateway.web`, :mod:`gateway.cli`, :mod:`gateway.mcp`), the composition root or the
settings: each component takes the few values it needs.
"""
