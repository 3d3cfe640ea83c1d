"""Gaps closed after #14 landed: the Python type in records (``caller_type``),
``save_many`` warnings, tensor-map metadata, empty Arrow tables, numpy
scalars, and mapped arrays outliving ``rm`` + ``gc``."""

from __future__ import annotations

import json
from typing import Generic, TypeVar

import ml_dtypes
import numpy as np
import pyarrow as pa
import pydantic
import pytest
import safetensors.numpy
from conftest import cli

import stowage
from stowage._convert import type_name

T = TypeVar("T")


class Box(list, Generic[T]):  # type: ignore[type-arg]
    """A typing generic that stowage can store (a list)."""


class Page(pydantic.BaseModel, Generic[T]):
    items: list[T]


class Plain:
    pass


def test_record_caller_type_is_the_python_type_and_obj_type_stays_the_plugins(host, make_config):
    cases = {
        "array": (np.arange(3, dtype=np.float32), "tensor", "numpy.ndarray"),
        "weights": ({"w": np.ones(2)}, "tensor_map", "builtins.dict"),
        "table": (pa.table({"x": [1]}), "arrow", "pyarrow.lib.Table"),
        "cls": (Plain, "class_source", f"type[{__name__}.Plain]"),
        "plain": ({"a": 1}, "map", "builtins.dict"),
        "boxed": (Box[int]([1, 2]), "list", f"{__name__}.Box[int]"),
        "nested": (Box[dict[str, Box[int]]]([]), "list", f"{__name__}.Box[dict[str, {__name__}.Box[int]]]"),
    }
    for name, (obj, _, caller_type) in cases.items():
        record = host.save(name, obj)
        assert list(record)[:3] == ["name", "obj_type", "caller_type"]
        assert record["caller_type"] == caller_type, name
    config = make_config()
    for name, (_, obj_type, caller_type) in cases.items():
        shown = json.loads(cli(config, "inspect", name, "--json").stdout)
        assert (shown["obj_type"], shown["caller_type"]) == (obj_type, caller_type), name
    text = cli(config, "inspect", "array").stdout.splitlines()
    assert text[1:3] == ["type:        tensor", "caller type: numpy.ndarray"]
    # Readers still dispatch on the plugin's obj_type.
    assert list(host.load("weights")) == ["w"]
    assert host.load("boxed") == [1, 2]


def test_pydantic_generic_models_are_named_with_their_parameters(host):
    page = Page[int](items=[1])
    assert type_name(page) == f"{__name__}.Page[int]"
    assert type_name(Page[int]) == f"type[{__name__}.Page[int]]"
    with pytest.raises(TypeError) as raised:
        host.save("page", page)
    assert str(raised.value).startswith(f"cannot store a value of type {__name__}.Page[int]; supported:")


def test_save_many_records_caller_types_and_serialize_reports_it(host):
    records = host.save_many({"a": np.zeros(2), "b": [1]})
    assert [r["caller_type"] for r in records] == ["numpy.ndarray", "builtins.list"]
    assert host.serialize(Box[str](["x"]))[1]["caller_type"] == f"{__name__}.Box[str]"


def test_save_many_emits_a_plugin_warning_per_skipped_plugin(make_config):
    h = stowage.Host(make_config(("panicky", "echo")))
    with pytest.warns(stowage.PluginWarning) as caught:
        records = h.save_many({"a": "panic:serialize", "b": "fine"})
    assert [r["written_by"]["serializer"] for r in records] == ["echo", "panicky"]
    assert [str(w.message) for w in caught] == [
        "skipped plugin panicky: dispatch: serialize: panic: panicked in serialize: fixture panic in serialize at tests/fixtures/common/src/lib.rs:54"
    ]


def test_tensor_map_metadata_survives_save_load_and_the_cli(host, make_config, tmp_path):
    weights = stowage.TensorMap({"w": np.arange(4, dtype=np.float32)}, metadata={"format": "pt", "step": "12"})
    host.save("tm", weights)
    for mapped in (False, True):
        loaded = host.load("tm", mapped=mapped)
        assert isinstance(loaded, stowage.TensorMap) and isinstance(loaded, dict)
        assert loaded.metadata == {"format": "pt", "step": "12"}
        np.testing.assert_array_equal(loaded["w"], weights["w"])
    config = make_config()
    out = tmp_path / "tm.safetensors"
    cli(config, "get", "tm", "-o", str(out))
    with safetensors.safe_open(str(out), "np") as f:
        assert f.metadata() == {"format": "pt", "step": "12"}
    # A file written elsewhere keeps its metadata through `put` and load.
    theirs = tmp_path / "theirs.safetensors"
    safetensors.numpy.save_file({"x": np.ones(2, dtype=np.int8)}, str(theirs), metadata={"who": "safetensors"})
    cli(config, "put", "theirs", str(theirs))
    assert host.load("theirs").metadata == {"who": "safetensors"}
    # A plain dict of arrays has none.
    host.save("bare", {"x": np.ones(1)})
    assert host.load("bare").metadata == {}


def test_tensor_map_metadata_must_be_strings(host):
    with pytest.raises(TypeError) as raised:
        host.save("bad", stowage.TensorMap({"w": np.ones(1)}, metadata={"n": 1}))
    assert str(raised.value) == "TensorMap.metadata must map str to str, not str to int"


def test_empty_arrow_tables_keep_their_schema(host):
    schema = pa.schema([("x", pa.int64()), ("s", pa.string()), ("f", pa.list_(pa.float32()))])
    no_batches = pa.Table.from_batches([], schema)
    assert no_batches.to_batches() == []
    empty_columns = pa.table({"x": pa.array([], pa.int64()), "s": pa.array([], pa.string())})
    for name, table in (("no-batches", no_batches), ("empty-columns", empty_columns)):
        host.save(name, table)
        for mapped in (False, True):
            loaded = host.load(name, mapped=mapped)
            assert loaded.num_rows == 0
            assert loaded.schema.equals(table.schema), name


def test_arrow_schema_and_field_metadata_survive_save_load_and_the_stored_file(host, make_config, tmp_path):
    schema = pa.schema(
        [pa.field("x", pa.int64(), metadata={"unit": "steps"}), ("s", pa.string())],
        metadata={"origin": "stowage-test", "pandas": '{"index_columns": []}'},
    )
    table = pa.table({"x": [1, 2, 3], "s": ["a", None, "c"]}, schema=schema)
    host.save("described", table)
    for mapped in (False, True):
        loaded = host.load("described", mapped=mapped)
        assert loaded.schema.equals(table.schema, check_metadata=True), mapped
        assert loaded.schema.metadata[b"origin"] == b"stowage-test"
        assert loaded.equals(table)
    out = tmp_path / "described.arrow"
    cli(make_config(), "get", "described", "-o", str(out))
    stored = pa.ipc.open_file(str(out)).read_all()
    assert stored.schema.equals(table.schema, check_metadata=True)


NUMPY_SCALARS = [
    (np.bool_(True), True),
    (np.int8(-3), -3),
    (np.uint8(250), 250),
    (np.int16(-300), -300),
    (np.uint16(65535), 65535),
    (np.int32(-(2**31)), -(2**31)),
    (np.uint32(2**32 - 1), 2**32 - 1),
    (np.int64(-(2**63)), -(2**63)),
    (np.uint64(2**63 - 1), 2**63 - 1),
    (np.float16(0.5), 0.5),
    (np.float32(0.1), float(np.float32(0.1))),
    (np.float64(2.5), 2.5),
    (ml_dtypes.bfloat16(1.5), 1.5),
    (ml_dtypes.float8_e4m3fn(0.25), 0.25),
    (ml_dtypes.float8_e5m2(-2.0), -2.0),
]


@pytest.mark.parametrize(("scalar", "number"), NUMPY_SCALARS, ids=lambda v: type(v).__name__)
def test_numpy_scalars_are_plain_numbers(host, scalar, number):
    record = host.save("s", scalar)
    assert (record["written_by"]["serializer"], record["caller_type"]) == ("msgpack", type_name(scalar))
    loaded = host.load("s")
    assert loaded == number and type(loaded) is type(number)
    host.save("metrics", {"loss": scalar, "steps": [scalar]})
    assert host.load("metrics") == {"loss": number, "steps": [number]}


@pytest.mark.parametrize(
    ("scalar", "message"),
    [
        (np.uint64(2**63), "int 9223372036854775808 is outside the 64-bit range"),
        (np.complex64(1j), "cannot store a numpy scalar of dtype complex64 (numpy.complex64); supported dtypes: bool, int8"),
        (np.datetime64("2026-01-01"), "cannot store a numpy scalar of dtype datetime64[D] (numpy.datetime64)"),
        (np.longdouble(1), "cannot store a numpy scalar of dtype float128 (numpy.longdouble)"),
    ],
    ids=["uint64-above-i64", "complex64", "datetime64", "float128"],
)
def test_unsupported_numpy_scalars_are_a_type_error(host, scalar, message):
    with pytest.raises(TypeError) as raised:
        host.save("bad", scalar)
    assert str(raised.value).startswith(message)


def test_a_masked_array_is_a_type_error_not_a_silently_dropped_mask(host):
    with pytest.raises(TypeError) as raised:
        host.save("m", np.ma.masked_array([1.0, 2.0], mask=[False, True]))
    assert str(raised.value) == (
        "cannot store a numpy masked array (numpy.ma.MaskedArray): its mask would be lost; save .data and .mask as two arrays"
    )
    assert host.ls() == []


def test_a_zero_d_array_stays_a_tensor(host):
    assert host.save("z", np.array(1.5, dtype=np.float16))["obj_type"] == "tensor"
    assert host.load("z").dtype == np.float16


def test_a_mapped_array_outlives_rm_and_gc_of_its_artifact(host, tmp_path):
    # Why stowage needs no SIGBUS guard: blob files are written once, never
    # truncated or rewritten in place; `gc` unlinks them, which leaves an
    # existing mapping intact. Only an outside writer truncating a blob
    # file could fault a mapped array (see README "From Python").
    array = np.arange(1 << 18, dtype=np.float32)
    digest = host.save("m", array)["blobs"][0]["digest"]
    mapped = host.load("m", mapped=True)
    host.rm("m")
    assert host.gc()["blob_files_removed"] == 1
    assert list((tmp_path / "store" / "blobs").rglob(digest)) == []
    np.testing.assert_array_equal(mapped, array)
