"""Type mapping at the Python edge (SPEC §12); the native module moves bytes.

Decisions:
- numpy dtypes map to safetensors names by ``dtype.name``; ``ml_dtypes``
  bfloat16/float8 arrays keep their names (BF16, F8_E4M3, F8_E5M2).
- A big-endian array is converted once to little-endian and a
  non-contiguous one made C-contiguous once; everything else is borrowed.
- A masked array is a ``TypeError`` (its mask would be silently dropped);
  other ndarray subclasses store their data and load as plain arrays.
- On load, dtypes numpy lacks come back as ``ml_dtypes`` arrays when that
  package imports, else as raw ``uint8``/``uint16`` :class:`RawTensor`
  arrays whose ``dtype_name`` says what they hold.
- A numpy scalar is a number: one of a supported dtype stores as the plain
  ``bool``/``int``/``float`` of ``.item()`` (narrow floats widen exactly);
  an array, even 0-d, is a tensor.
- A record's ``caller_type`` is :func:`type_name` of the saved object:
  ``module.qualname`` of its type (``builtins.dict``, ``numpy.ndarray``),
  with generic parameters where the object carries them — a ``typing``
  generic instance made as ``Box[int](...)`` (``__orig_class__``) gives
  ``mod.Box[int]``, a parametrized pydantic model's class is already named
  ``Model[int]`` — and ``type[mod.Cls]`` for a class. Parameters are spelled
  as ``typing`` spells them (``int``, ``list[str]``, ``mod.Cls``).
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
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
    if isinstance(array, np.ma.MaskedArray):
        raise TypeError(
            f"cannot store a numpy masked array ({type(array).__module__}.{type(array).__qualname__}): "
            "its mask would be lost; save .data and .mask as two arrays"
        )
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


def _type_repr(obj: Any) -> str:
    """A generic parameter as ``typing`` spells it."""
    if isinstance(obj, type) and not isinstance(obj, types.GenericAlias):
        if obj.__module__ == "builtins":
            return obj.__qualname__
        return f"{obj.__module__}.{obj.__qualname__}"
    if obj is Ellipsis:
        return "..."
    return repr(obj)


def type_name(obj: Any) -> str:
    """The Python type a record's ``caller_type`` names (module docs)."""
    if isinstance(obj, type) and not isinstance(obj, types.GenericAlias):
        return f"type[{obj.__module__}.{obj.__qualname__}]"
    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    orig = getattr(obj, "__orig_class__", None)
    if orig is not None and typing.get_origin(orig) is cls:
        name += "[" + ", ".join(_type_repr(arg) for arg in typing.get_args(orig)) + "]"
    return name


def numpy_scalar(obj: Any) -> Any:
    """The plain number a numpy scalar holds; ``None`` for anything else."""
    if not isinstance(obj, np.generic):
        return None
    if _TO_SAFETENSORS.get(obj.dtype.name) is None:
        raise TypeError(
            f"cannot store a numpy scalar of dtype {obj.dtype.name} "
            f"({type(obj).__module__}.{type(obj).__qualname__}); supported dtypes: {_SUPPORTED_DTYPES}"
        )
    if obj.dtype.kind == "f" or obj.dtype.kind == "V":
        return float(obj)
    return obj.item()


class TensorMap(dict):  # type: ignore[type-arg]
    """A loaded ``tensor_map``: ``dict[str, ndarray]`` plus the safetensors
    ``__metadata__`` strings in :attr:`metadata`. Saving one writes them
    back; a plain dict of arrays has none."""

    metadata: dict[str, str]

    def __init__(self, tensors: Any = (), metadata: dict[str, str] | None = None) -> None:
        super().__init__(tensors)
        self.metadata = dict(metadata or {})


def tensor_map(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> TensorMap:
    return TensorMap(tensors, metadata)


def tensor_map_metadata(tensors: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``__metadata__`` pairs to save with a dict of arrays."""
    metadata = getattr(tensors, "metadata", None) if isinstance(tensors, TensorMap) else None
    if not metadata:
        return []
    pairs = []
    for key, text in metadata.items():
        if not isinstance(key, str) or not isinstance(text, str):
            raise TypeError(f"TensorMap.metadata must map str to str, not {type(key).__name__} to {type(text).__name__}")
        pairs.append((key, text))
    return pairs


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
