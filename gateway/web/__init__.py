"""The HTTP face: the ASGI app, its middlewares, routes and the OpenAPI documents. Routes turn
HTTP into a call for :mod:`gateway.flow` and its outcome back into a response.

May import: everything below it (:mod:`gateway.services`, :mod:`gateway.flow`,
:mod:`gateway.backends`, :mod:`gateway.core`, :mod:`gateway.telemetry`).
"""
