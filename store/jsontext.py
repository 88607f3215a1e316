"""JSON from files we did not write (headers, manifests, configs): nesting too deep for the
parser is reported as bad JSON (a ValueError), not a RecursionError that would end the command.
And JSON we write for runtimes to read: finite numbers only."""

from __future__ import annotations

import json
import math
from typing import Any


def loads(text: str | bytes, **kwargs: Any) -> Any:
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def non_finite(value: Any, at: str = "") -> str | None:
    """Where `value` holds a float JSON has no spelling for (NaN, Infinity): the key path, or None.
    json.dumps would write them as NaN and Infinity, which strict parsers (serde_json, Go) refuse."""
    if isinstance(value, float):
        return None if math.isfinite(value) else at or "the value"
    if isinstance(value, dict):
        items = ((f"{at}.{k}" if at else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{at}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    return next((found for path, v in items if (found := non_finite(v, path)) is not None), None)


def dumps_finite(value: Any, **kwargs: Any) -> str:
    """json.dumps for JSON we generate: refuses NaN and Infinity (ValueError naming the key)."""
    bad = non_finite(value)
    if bad is not None:
        raise ValueError(f"{bad} is not a finite number")
    return json.dumps(value, allow_nan=False, **kwargs)
