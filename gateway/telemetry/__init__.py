"""Logging set-up and the Prometheus metrics every layer reports to.

May import: the standard library and third-party libraries only.
"""
