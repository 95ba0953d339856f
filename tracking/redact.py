"""Passwords out of anything fittrack prints or stores (params, tags, messages, state files).

Standard library only, so that `fittrack server` does not import MLflow to mask a URL.
"""

from __future__ import annotations

import re

_PASSWORD_IN_URL = re.compile(r"(://[^/@:]*):[^/@]*@")


def mask_uri(text: str) -> str:
    """A URL (or any text holding one) with its password shown as ***."""
    return _PASSWORD_IN_URL.sub(r"\1:***@", text or "")
