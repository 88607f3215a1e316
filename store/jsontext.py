"""JSON from files we did not write (headers, manifests, configs): nesting too deep for the
parser is reported as bad JSON (a ValueError), not a RecursionError that would end the command."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes, **kwargs: Any) -> Any:
    try:
        return json.loads(text, **kwargs)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
