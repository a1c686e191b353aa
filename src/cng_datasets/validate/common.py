"""What the checks of :mod:`cng_datasets.validate` share: opening inputs, collecting problems."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

from cng_datasets import storage


class _Problems:
    """Collects problems, with a cap per kind so a broken column gives one line, not a million."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


def _bytes_source(url: str) -> tuple[Callable[[int, int], bytes], int, Callable[[], None]]:
    """A ``get_bytes(offset, length)`` over ``url`` (range reads), the file size, and a closer."""
    f = storage.open_input(url)
    size = storage.size(url)

    def get_bytes(offset: int, length: int) -> bytes:
        f.seek(offset)
        return f.read(length)

    return get_bytes, size, f.close


def _decompress(data: bytes, compression: Any) -> bytes:
    from pmtiles.tile import Compression

    if compression == Compression.GZIP:
        return gzip.decompress(data)
    if compression in (Compression.NONE, Compression.UNKNOWN):
        return data
    raise ValueError(f"unsupported compression {compression.name}")
