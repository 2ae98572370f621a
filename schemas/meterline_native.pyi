"""Types of the Rust extension (native/src/lib.rs); next to the module it types."""

from typing import Any

class Buf:
    """A Rust Vec exposed through the buffer protocol (read-only)."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

def decode_tokens(
    values: list[bytes], earliest_ms: int, latest_ms: int, release_gil: bool = True
) -> tuple[
    int,  # rows accepted
    Buf,  # int64 columns, column k from value k * len(values)
    list[tuple[Buf, Buf]],  # string columns: (int32 offsets, data)
    tuple[Buf, Buf],  # the accepted values: (int32 offsets, data)
    Buf,  # int32 label combination per row
    list[tuple[Any, ...]],  # the combinations: 9 str, datacontenttype None if unset
    list[int],  # indexes for the Python path
    Buf,  # int32 index in values of each row
]: ...

# Raises TypeError (a value not bytes), ValueError (a batch past Arrow's int32 offsets,
# 2 GiB) or RuntimeError (a panic in the decode pass).

def _panic_for_tests(message: str) -> None:
    """Panics: proves a panic reaches Python as an exception instead of aborting."""
