"""The command line (``civicrm-gateway``): serve, check, sandbox, export, audit, openapi.

May import: every other layer (it starts the web face and runs calls through the flow).
"""
