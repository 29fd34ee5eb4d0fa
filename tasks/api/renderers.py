"""The JSON renderer of every endpoint: DRF's output, written by orjson.

DRF's JSONRenderer writes with ``json.dumps`` and its encoder class: 0.65 ms for a
page of 50 tasks that orjson writes in 0.05 (``bench.scale``'s lists). With DRF's
settings as Crux keeps them (compact separators, UTF-8 text unescaped) orjson writes
the same bytes for what a response holds once serialized: text, integers, booleans,
null, lists and objects with text keys. Floats are the same numbers, written as
orjson writes them (``1.5e-7``, where ``json`` writes ``1.5e-07``). U+2028 and U+2029
are escaped as DRF escapes them. NaN and the infinities, which DRF refuses (a 500),
are written as null.

Whatever orjson would write otherwise, or refuses, is DRF's to render, as before:
times, dates and dataclasses (DRF's encoder writes times its own way), Decimals,
lazy texts, sets and other types DRF's encoder converts, objects with keys that are
not text, integers past 64 bits, text that is not UTF-8, and a response asked for
indented (``Accept: application/json; indent=4``, the browsable API).
"""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer

# Types orjson writes otherwise than DRF's encoder: they raise, and DRF renders the response.
_DRFS_TYPES = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class OrjsonRenderer(JSONRenderer):
    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if (
            data is None
            or self.ensure_ascii
            or not self.compact
            or self.get_indent(accepted_media_type or "", renderer_context or {}) is not None
        ):
            return super().render(data, accepted_media_type, renderer_context)
        try:
            written = orjson.dumps(data, option=_DRFS_TYPES)
        except orjson.JSONEncodeError:
            return super().render(data, accepted_media_type, renderer_context)
        return written.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
