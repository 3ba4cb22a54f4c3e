"""Text of many rows built column by column (pyarrow.compute), not row by row in Python.

Writing a consensus of two million tasks as CSV lines or JSON objects one ``dict`` at a
time costs seconds per million rows; the same text assembled from whole columns costs a
fraction of that.  Every function takes and returns column-length arrays; the result of
:func:`joined` is a string array whose concatenated bytes are the finished text.

Numbers use pyarrow's shortest round-trip form (``0.1``, ``1e-30``, ``1`` for 1.0): they
parse back to exactly the same float, in CSV and in JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_NEEDS_CSV_QUOTES = r'[",\r\n]'
_JSON_CONTROL = r"[\x00-\x1f]"


def numbers(values) -> pa.Array:
    """Numbers as text; NaN never reaches here (the engine reports null instead)."""
    return pc.cast(pa.array(np.asarray(values)), pa.string())


def booleans(mask) -> pa.Array:
    return pc.if_else(pa.array(np.asarray(mask, dtype=bool)), "true", "false")


def strings(values) -> pa.Array:
    return values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(values, dtype=object), pa.string())


def take(fragments: list[str], codes) -> pa.Array:
    """``fragments[code]`` for every code (class names, JSON literals of labels, ...)."""
    return pa.array(fragments, pa.string()).take(pa.array(np.asarray(codes, dtype=np.int64)))


def csv_fields(values) -> pa.Array:
    """Strings as CSV fields: quoted (quotes doubled) only where a comma, quote or line
    break makes it necessary, as Python's csv module writes them."""
    arr = strings(values)
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(arr, '"', '""'), '"', "")
    return pc.if_else(pc.match_substring_regex(arr, _NEEDS_CSV_QUOTES), quoted, arr)


def json_strings(values) -> pa.Array:
    """JSON string literals (UTF-8 kept as is, like ``json.dumps(ensure_ascii=False)``)."""
    arr = strings(values)
    escaped = pc.replace_substring(pc.replace_substring(arr, "\\", "\\\\"), '"', '\\"')
    out = pc.binary_join_element_wise('"', escaped, '"', "")
    control = pc.match_substring_regex(arr, _JSON_CONTROL)
    if pc.any(control).as_py():  # rare (the API refuses them): exact escapes for those rows
        rows = np.flatnonzero(control.to_numpy(zero_copy_only=False))
        fixed = out.to_pylist()
        for i, text in zip(rows.tolist(), arr.take(pa.array(rows)).to_pylist()):
            fixed[i] = json.dumps(text, ensure_ascii=False)
        out = pa.array(fixed, pa.string())
    return out


def json_literals(values: list) -> list[str]:
    """JSON text of a few values (class labels as declared: strings or integers)."""
    return [json.dumps(v, ensure_ascii=False, allow_nan=False) for v in values]


def sparse_objects(indptr, cols, value_text: pa.Array, key_fragments: list[str]) -> pa.Array:
    """One JSON object per row from a CSR layout: row ``i`` holds the pairs
    ``key_fragments[cols[j]] + value_text[j]`` for ``j`` in ``indptr[i]:indptr[i+1]``.
    ``key_fragments`` are ready-made ``"key":`` prefixes."""
    pairs = pc.binary_join_element_wise(take(key_fragments, cols), value_text, "")
    lists = pa.ListArray.from_arrays(pa.array(np.asarray(indptr, dtype=np.int32)), pairs)
    return pc.binary_join_element_wise("{", pc.binary_join(lists, ","), "}", "")


def dense_objects(matrix: np.ndarray, key_fragments: list[str]) -> pa.Array:
    """One JSON object per row of a dense ``(n, K)`` matrix, every column listed."""
    n, k = matrix.shape
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    cols = np.tile(np.arange(k, dtype=np.int64), n)
    return sparse_objects(indptr, cols, numbers(matrix.ravel()), key_fragments)


def joined(pieces: list, separator: str = "", end: str = "\n") -> pa.Array:
    """Row-wise concatenation of columns and constant strings, each row ending in ``end``."""
    return pc.binary_join_element_wise(pc.binary_join_element_wise(*pieces, separator), end, "")


def text_bytes(lines: pa.Array) -> memoryview:
    """The concatenated bytes of a string array (the finished text), without copying."""
    lines = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    if pa.types.is_large_string(lines.type):
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    else:
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    start, stop = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
    data = lines.buffers()[2]
    return memoryview(data)[start:stop] if data is not None else memoryview(b"")
