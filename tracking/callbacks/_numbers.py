"""Which logged values are numbers, and which of those are finite."""

from __future__ import annotations

import math


def is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def is_finite(value) -> bool:
    return is_number(value) and math.isfinite(float(value))
