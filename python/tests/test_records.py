"""The record dicts ``save``/``save_many`` build directly (python/src/record.rs)
equal the JSON form ``inspect`` returns, key order included, for every kind;
the builtin ``caller_type`` fast path (python/src/host.rs) names exactly what
``stowage._convert.type_name`` names, subclasses included."""

from __future__ import annotations

import gc
import json

import numpy as np
import pyarrow as pa
import pytest

import stowage
from stowage._convert import type_name


class Plain:
    pass


class MyDict(dict):  # type: ignore[type-arg]
    pass


class MyList(list):  # type: ignore[type-arg]
    pass


class MyTuple(tuple):  # type: ignore[type-arg]
    pass


class MyInt(int):
    pass


class MyFloat(float):
    pass


class MyStr(str):
    pass


class MyBytes(bytes):
    pass


VALUES = {
    "none": None,
    "true": True,
    "int": 7,
    "big": 2**63 - 1,
    "float": 0.25,
    "str": "text",
    "bytes": b"\x00\x01",
    "list": [1, "a", None],
    "tuple": (1, 2),
    "dict": {"step": 1, "loss": 0.5, "tag": "run-1"},
    "empty": {},
    "array": np.arange(3, dtype=np.float32),
    "weights": {"w": np.ones(2), "b": np.zeros(1)},
    "composite": {"a": 1, "w": np.zeros(2), "t": pa.table({"x": [1, 2]})},
    "table": pa.table({"x": [1]}),
    "cls": Plain,
    "my_dict": MyDict(a=1),
    "my_list": MyList([1]),
    "my_tuple": MyTuple((1,)),
    "my_int": MyInt(3),
    "my_float": MyFloat(1.5),
    "my_str": MyStr("s"),
    "my_bytes": MyBytes(b"b"),
}


def test_save_many_records_equal_inspect_in_content_and_key_order(host):
    records = host.save_many(VALUES)
    assert [r["name"] for r in records] == list(VALUES)
    for record in records:
        shown = host.inspect(record["name"])
        assert json.dumps(record) == json.dumps(shown), record["name"]
    assert "parts" in host.inspect("composite")
    assert [list(p) for p in host.inspect("composite")["parts"]][0] == [
        "path", "kind", "obj_type", "encoding", "encoding_version", "written_by", "serializer_info", "blobs"
    ]


def test_save_record_equals_inspect_in_content_and_key_order(host):
    for name, value in VALUES.items():
        record = host.save(name, value)
        assert json.dumps(record) == json.dumps(host.inspect(name)), name


def test_caller_type_of_builtins_and_their_subclasses_is_the_helpers_name(host):
    records = host.save_many(VALUES)
    for record in records:
        assert record["caller_type"] == type_name(VALUES[record["name"]]), record["name"]
    names = {r["name"]: r["caller_type"] for r in records}
    assert (names["none"], names["true"], names["int"], names["float"], names["str"]) == (
        "builtins.NoneType", "builtins.bool", "builtins.int", "builtins.float", "builtins.str"
    )
    assert (names["bytes"], names["list"], names["tuple"], names["dict"]) == (
        "builtins.bytes", "builtins.list", "builtins.tuple", "builtins.dict"
    )
    assert (names["my_dict"], names["my_int"], names["my_str"]) == (
        f"{__name__}.MyDict", f"{__name__}.MyInt", f"{__name__}.MyStr"
    )
    assert (names["my_list"], names["my_tuple"], names["my_float"], names["my_bytes"]) == (
        f"{__name__}.MyList", f"{__name__}.MyTuple", f"{__name__}.MyFloat", f"{__name__}.MyBytes"
    )


def test_records_of_one_batch_share_no_dict_or_list(host):
    first, second = host.save_many({"a": {"x": 1}, "b": {"x": 2}})
    for key in ("blobs", "written_by", "serializer_info"):
        assert first[key] is not second[key], key
    assert first["blobs"][0] is not second["blobs"][0]
    first["serializer_info"]["source"] = "changed"
    first["written_by"]["serializer"] = "changed"
    assert second["serializer_info"] == {"source": "api"}
    assert second["written_by"]["serializer"] == "msgpack"
    assert host.save_many({"c": 1})[0]["serializer_info"] == {"source": "api"}


def test_save_many_leaves_the_garbage_collectors_state_as_it_found_it(host):
    assert gc.isenabled()
    host.save_many({"a": {"x": 1}, "b": [2]})
    assert gc.isenabled()
    gc.disable()
    try:
        host.save_many({"c": {"x": 1}})
        assert not gc.isenabled()
    finally:
        gc.enable()
    # A batch that fails leaves it enabled too.
    with pytest.raises(stowage.Error) as raised:
        host.save_many({"d": 1, "e/f": 2})
    assert str(raised.value) == 'invalid artifact name "e/f": contains \'/\''
    assert gc.isenabled()
