"""Task groups: the name a key's task shares with its siblings, as dask's ``key_split``.

``"inc-3f2a9c0d..."`` -> ``"inc"``, ``"('sum-aggregate-abc123', 0, 1)"`` -> ``"sum-aggregate"``,
``"x-1"`` -> ``"x"``: hash-like and numeric parts end the name. The profiler, ``progress``
and the performance report group by it.
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["key_split"]

_HEXISH = re.compile(r"^[0-9a-f]{8,}$|^\d+$")


@lru_cache(maxsize=16_384)
def key_split(key: str) -> str:
    text = key.strip()
    if text.startswith("(") and "," in text:
        text = text[1:].split(",", 1)[0].strip(" '\"")
    words: list[str] = []
    for word in text.split("-"):
        if _HEXISH.match(word) and words:
            break
        words.append(word)
    return "-".join(words) or "?"
