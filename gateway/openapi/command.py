"""``civicrm-gateway openapi``: write the OpenAPI document."""

from __future__ import annotations

import argparse
from typing import Any


def add_command(sub: Any) -> None:
    """Register the sub-command on the CLI's sub-parsers (filled in by the OpenAPI work)."""
    del sub


__all__ = ["add_command", "argparse"]
