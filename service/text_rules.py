"""What an id or a label may hold, the same for HTTP bodies, uploaded files and the
command line's input files."""

from __future__ import annotations

import re

# C0/C1 control characters (NUL, tabs, line breaks, escape sequences: they break logs, CSV
# exports and terminals) and lone surrogates (a JSON "\ud800" decodes to one; it cannot be
# encoded as UTF-8, so it could never be stored or written out).
BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def bad_char_message(value: str) -> str | None:
    """Why ``value`` is refused (naming the character and its position), or None."""
    bad = BAD_CHARS.search(value)
    if bad is None:
        return None
    return f"must not contain control characters or lone surrogates (U+{ord(bad.group()):04X} at {bad.start()})"
