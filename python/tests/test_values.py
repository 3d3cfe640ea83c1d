"""Every kind both ways, the dtype rules and the TypeErrors (SPEC §12)."""

from __future__ import annotations

import subprocess
import sys

import ml_dtypes
import numpy as np
import pyarrow as pa
import pytest

import stowage

PLAIN = [
    None,
    True,
    False,
    0,
    -(2**63),
    2**63 - 1,
    1.5,
    float("inf"),
    "",
    "héllo\n",
    b"",
    b"\x00\xff",
    [],
    [1, "a", None, [2.5, b"x"]],
    {},
    {"a": 1, "b": {"c": [True, None]}, "é": b"y"},
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_values_round_trip_through_msgpack(host, value):
    record = host.save("v", value)
    assert record["written_by"]["serializer"] == "msgpack"
    loaded = host.load("v")
    assert loaded == value and type(loaded) is type(value)


def test_tuple_comes_back_as_list(host):
    host.save("t", (1, (2, "x")))
    assert host.load("t") == [1, [2, "x"]]


def test_nan_round_trips(host):
    host.save("nan", float("nan"))
    assert np.isnan(host.load("nan"))


NUMERIC = ["bool", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64"]


@pytest.mark.parametrize("dtype", NUMERIC)
def test_every_numpy_dtype_round_trips_read_only(host, dtype):
    array = (np.arange(24) % 7).astype(dtype).reshape(2, 3, 4)
    record = host.save("a", array)
    assert (record["encoding"], record["written_by"]["serializer"]) == ("safetensors", "tensor")
    for mapped in (False, True):
        loaded = host.load("a", mapped=mapped)
        assert loaded.dtype == array.dtype and loaded.shape == array.shape
        np.testing.assert_array_equal(loaded, array)
        assert not loaded.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            loaded[0, 0, 0] = 1


def test_scalar_and_empty_arrays_round_trip(host):
    host.save("s", np.array(3.5, dtype=np.float32))
    assert host.load("s").shape == () and host.load("s") == np.float32(3.5)
    host.save("e", np.zeros((0, 4), dtype=np.int32))
    assert host.load("e").shape == (0, 4)


def test_big_endian_and_non_contiguous_arrays_are_converted_once(host):
    big = np.arange(6, dtype=">f4").reshape(2, 3)
    host.save("big", big)
    loaded = host.load("big")
    assert loaded.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(loaded, big)
    strided = np.arange(20, dtype=np.int64).reshape(4, 5)[:, ::2]
    host.save("strided", strided)
    np.testing.assert_array_equal(host.load("strided"), strided)


@pytest.mark.parametrize("dtype", ["bfloat16", "float8_e4m3fn", "float8_e5m2"])
def test_ml_dtypes_round_trip(host, dtype):
    array = np.array([[0.5, -1.0], [2.0, 0.0]], dtype=getattr(ml_dtypes, dtype))
    host.save("m", array)
    loaded = host.load("m")
    assert loaded.dtype == array.dtype
    assert loaded.tobytes() == array.tobytes()


def test_without_ml_dtypes_bf16_loads_as_raw_uint16_with_dtype_name(host, tmp_path):
    array = np.array([1.0, -2.0], dtype=ml_dtypes.bfloat16)
    host.save("bf", array)
    config = tmp_path / "plugins.toml"
    script = f"""
import sys
sys.modules["ml_dtypes"] = None
import stowage
h = stowage.Host({str(config)!r})
raw = h.load("bf")
print(raw.dtype, raw.dtype_name, raw.tobytes().hex(), type(raw).__name__)
h.save("again", raw)
print(h.inspect("again")["encoding"])
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == f"uint16 BF16 {array.tobytes().hex()} RawTensor\nsafetensors\n"
    assert host.load("again").tobytes() == array.tobytes()
    assert host.load("again").dtype == array.dtype


def test_dict_of_arrays_is_a_tensor_map(host):
    weights = {"w": np.ones((2, 2), dtype=np.float32), "b": np.arange(3, dtype=np.int64)}
    record = host.save("tm", weights)
    assert record["encoding"] == "safetensors"
    loaded = host.load("tm")
    assert sorted(loaded) == ["b", "w"]
    for key, array in weights.items():
        np.testing.assert_array_equal(loaded[key], array)


def test_pyarrow_table_round_trips_as_pyarrow(host):
    table = pa.table({"x": pa.array([1, 2, None], pa.int64()), "s": ["a", "b", "c"]})
    record = host.save("t", table)
    assert record["written_by"]["serializer"] == "arrow"
    for mapped in (False, True):
        loaded = host.load("t", mapped=mapped)
        assert isinstance(loaded, pa.Table)
        assert loaded.equals(table)


def test_record_batch_reader_and_batch_are_arrow(host):
    batch = pa.record_batch({"v": [1.0, 2.0]})
    host.save("b", batch)
    assert host.load("b").equals(pa.Table.from_batches([batch]))
    host.save("r", pa.RecordBatchReader.from_batches(batch.schema, [batch, batch]))
    assert host.load("r").num_rows == 4


SIDE_EFFECTS: list[str] = []


class Stored:
    """A class stored as source."""

    SIDE_EFFECTS.append("ran")

    def double(self, x):
        return 2 * x


def test_class_round_trips_as_source_and_never_runs_on_load(host):
    record = host.save("cls", Stored)
    assert record["written_by"]["serializer"] == "class-source"
    before = list(SIDE_EFFECTS)
    loaded = host.load("cls")
    assert isinstance(loaded, stowage.ClassSource)
    assert (loaded.qualname, loaded.module) == ("Stored", __name__)
    assert loaded.source.startswith("class Stored:\n")
    assert SIDE_EFFECTS == before
    namespace = {"SIDE_EFFECTS": SIDE_EFFECTS}
    built = loaded.build(namespace)
    assert built().double(21) == 42
    assert SIDE_EFFECTS == before + ["ran"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2**63, "int 9223372036854775808 is outside the 64-bit range; stowage stores ints from -2**63 to 2**63-1"),
        (-(2**63) - 1, "int -9223372036854775809 is outside the 64-bit range"),
        (1j, "cannot store a value of type complex; supported: None, bool"),
        (object(), "cannot store a value of type object; supported"),
        ({1: "x"}, "cannot store a dict with a int key; keys must be str"),
        (np.zeros(2, dtype=np.complex128), "cannot store a numpy array of dtype complex128"),
        (np.zeros(2, dtype=np.longdouble), "cannot store a numpy array of dtype float128"),
        (np.array([1, "x"], dtype=object), "cannot store a numpy array of dtype object"),
        (np.array(["2026-01-01"], dtype="datetime64[D]"), "cannot store a numpy array of dtype datetime64[D]"),
    ],
    ids=["int-above-i64", "int-below-i64", "complex", "object", "int-key", "complex128", "float128", "object-array", "datetime64"],
)
def test_unsupported_values_are_a_type_error_naming_the_type(host, value, message):
    with pytest.raises(TypeError) as raised:
        host.save("bad", value)
    assert str(raised.value).startswith(message)
    assert host.ls() == []
