"""GGUF metadata, read straight from the file header without loading the model.

The loader needs a few keys before llama.cpp is involved: the architecture
(to tell embedding models from chat models) and the context length, layer,
head and width counts (to size the context against available memory). The
header is read through ``mmap``; arrays such as the vocabulary are skipped,
so reading takes milliseconds even for large files. Results are cached by
path, size and modification time.
"""

from __future__ import annotations

import mmap
import os
import struct
from typing import Any

__all__ = ["read_gguf_metadata"]

_GGUF_SCALARS: dict[int, str] = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
    10: "<Q", 11: "<q", 12: "<d",
}
_GGUF_STRING = 8
_GGUF_ARRAY = 9
_metadata_cache: dict[tuple[str, int, int], dict[str, Any]] = {}


def read_gguf_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The key/value metadata of a GGUF file, without loading the model.

    Arrays (the vocabulary, merges) are skipped: their value is their length.
    Results are cached by path, size and modification time.

    Raises:
        ValueError: the file is not a GGUF file (version 2 or later).
    """
    path = os.fspath(path)
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    cached = _metadata_cache.get(key)
    if cached is not None:
        return cached
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version, _n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is too old")
        offset = 24
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            name, offset = _gguf_string(buf, offset)
            (value_type,) = struct.unpack_from("<I", buf, offset)
            value, offset = _gguf_value(buf, offset + 4, value_type)
            metadata[name] = value
    _metadata_cache[key] = metadata
    return metadata


def _gguf_string(buf: mmap.mmap, offset: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<Q", buf, offset)
    start = offset + 8
    return buf[start : start + length].decode("utf-8", "replace"), start + length


def _gguf_value(buf: mmap.mmap, offset: int, value_type: int) -> tuple[Any, int]:
    if value_type == _GGUF_STRING:
        return _gguf_string(buf, offset)
    if value_type == _GGUF_ARRAY:
        item_type, count = struct.unpack_from("<IQ", buf, offset)
        offset += 12
        if item_type == _GGUF_STRING:
            for _ in range(count):
                (length,) = struct.unpack_from("<Q", buf, offset)
                offset += 8 + length
        elif item_type in _GGUF_SCALARS:
            offset += count * struct.calcsize(_GGUF_SCALARS[item_type])
        else:  # arrays of arrays do not occur in model files; read them the slow way
            for _ in range(count):
                _, offset = _gguf_value(buf, offset, item_type)
        return count, offset
    fmt = _GGUF_SCALARS.get(value_type)
    if fmt is None:
        raise ValueError(f"unknown GGUF value type {value_type}")
    (value,) = struct.unpack_from(fmt, buf, offset)
    return value, offset + struct.calcsize(fmt)
