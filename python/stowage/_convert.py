"""Type mapping at the Python edge (SPEC §12); the native module moves bytes.

Decisions:
- numpy dtypes map to safetensors names by ``dtype.name``; ``ml_dtypes``
  bfloat16/float8 arrays keep their names (BF16, F8_E4M3, F8_E5M2).
- A big-endian array is converted once to little-endian and a
  non-contiguous one made C-contiguous once; everything else is borrowed.
- On load, dtypes numpy lacks come back as ``ml_dtypes`` arrays when that
  package imports, else as raw ``uint8``/``uint16`` :class:`RawTensor`
  arrays whose ``dtype_name`` says what they hold.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import numpy as np

_TO_SAFETENSORS = {
    "bool": "BOOL",
    "int8": "I8",
    "uint8": "U8",
    "int16": "I16",
    "uint16": "U16",
    "int32": "I32",
    "uint32": "U32",
    "int64": "I64",
    "uint64": "U64",
    "float16": "F16",
    "float32": "F32",
    "float64": "F64",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}
_NUMPY_NATIVE = {v: k for k, v in _TO_SAFETENSORS.items() if k not in ("bfloat16", "float8_e4m3fn", "float8_e5m2")}
# dtype -> (ml_dtypes attribute, raw carrier)
_EXTENDED = {
    "BF16": ("bfloat16", "uint16"),
    "F8_E4M3": ("float8_e4m3fn", "uint8"),
    "F8_E5M2": ("float8_e5m2", "uint8"),
}

_SUPPORTED_DTYPES = ", ".join(_TO_SAFETENSORS)


class RawTensor(np.ndarray):
    """A tensor whose dtype numpy lacks, as raw unsigned integers of the
    same width; ``dtype_name`` is the stored dtype (``BF16``, ``F8_E4M3``…)."""

    dtype_name: str

    def __array_finalize__(self, obj: Any) -> None:
        self.dtype_name = getattr(obj, "dtype_name", "")


def prepare_array(array: np.ndarray) -> tuple[np.ndarray, str]:
    """The array to borrow (little-endian, C-contiguous) and its dtype name."""
    if isinstance(array, RawTensor) and array.dtype_name:
        name = array.dtype_name
    else:
        name = _TO_SAFETENSORS.get(array.dtype.name)
    if name is None:
        raise TypeError(
            f"cannot store a numpy array of dtype {array.dtype.name} "
            f"({type(array).__module__}.{type(array).__qualname__}); supported dtypes: {_SUPPORTED_DTYPES}"
        )
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return array, name


def _ml_dtypes() -> Any:
    try:
        import ml_dtypes  # type: ignore[import-not-found]
    except ImportError:
        return None
    return ml_dtypes


def tensor(view: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only numpy array over a stored blob (no copy)."""
    native = _NUMPY_NATIVE.get(dtype)
    if native is not None:
        return np.frombuffer(view, dtype=np.dtype(native).newbyteorder("<")).reshape(shape)
    extended = _EXTENDED.get(dtype)
    if extended is None:
        raise TypeError(f"stored tensor dtype {dtype} has no numpy form")
    ml = _ml_dtypes()
    if ml is not None:
        return np.frombuffer(view, dtype=getattr(ml, extended[0])).reshape(shape)
    raw = np.frombuffer(view, dtype=extended[1]).reshape(shape).view(RawTensor)
    raw.dtype_name = dtype
    return raw


def arrow(table: Any) -> Any:
    """A ``pyarrow.Table`` when pyarrow imports, else the table object
    (which has ``__arrow_c_stream__``)."""
    try:
        import pyarrow  # type: ignore[import-not-found]
    except ImportError:
        return table
    return pyarrow.table(table)


def class_to_source(cls: type) -> tuple[str, str | None, str]:
    """``(qualname, module, source)`` of a class, via ``inspect.getsource``."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError) as error:
        raise TypeError(f"cannot store class {cls.__module__}.{cls.__qualname__}: no source ({error})") from None
    return cls.__qualname__, cls.__module__, source


def class_source(qualname: str, module: str | None, source: str) -> Any:
    from stowage import ClassSource

    return ClassSource(source=source, qualname=qualname, module=module)
