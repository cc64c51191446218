"""The call core: a request's params parsed once into a typed :class:`~gateway.core.call.Call`,
the names it holds resolved against CiviCRM's metadata, the access policy, and the answer
checked against the call. Pure and framework-free.

May import: the standard library, third-party libraries, :mod:`gateway.telemetry`. Never a
backend, the call flow, a face or the settings (components here take plain values).
"""
