"""The MCP face: a Model Context Protocol endpoint at ``/mcp`` (Streamable HTTP, the official
``mcp`` SDK) whose tools are calls of the same flow as the REST routes, so an assistant meets
the same tokens, policy, validation, limits, Idempotency-Key and audit trail as any client.

Mounted by the web face (:func:`gateway.mcp.server.install_mcp`), which hands it what only the
web face knows (how to read a request's credentials, the OpenAPI metadata cache); the stdio
bridge (:mod:`gateway.cli.mcp_bridge`) is the command line's, a client of ``/mcp``.

May import: everything below the web face (:mod:`gateway.services`, :mod:`gateway.flow`,
:mod:`gateway.backends`, :mod:`gateway.core`, :mod:`gateway.telemetry`), never the web face.
"""
