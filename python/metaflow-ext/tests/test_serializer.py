"""``StowageSerializer`` against Metaflow's serializer rules, in-process
(SPEC §12.4): what it claims, what it returns, what it never does."""

from __future__ import annotations

import collections
import os

import numpy as np
import pyarrow as pa
import pytest
import safetensors.numpy
from metaflow import metaflow_config
from metaflow.datastore.artifacts.serializer import SerializationFormat, SerializerStore
from metaflow_extensions.stowage.plugins.stowage_serializer import StowageSerializer, decode, encode

import stowage


@pytest.fixture(autouse=True)
def no_config(tmp_path, monkeypatch):
    """A working directory with no plugins.toml: the bundled plugins."""
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("STOWAGE_")]:
        monkeypatch.delenv(key)
    StowageSerializer._hosts.clear()
    yield
    StowageSerializer._hosts.clear()


class Model:
    pass


class Tagged(np.ndarray):
    """An ndarray subclass: stowage would load it as a plain array."""


def test_registered_ahead_of_pickle_and_active():
    assert SerializerStore._all_serializers["stowage"] is StowageSerializer
    ordered = SerializerStore.get_ordered_serializers()
    assert ordered.index(StowageSerializer) < [c.TYPE for c in ordered].index("pickle")


def test_claims_plugin_values_only(monkeypatch):
    claims = StowageSerializer.can_serialize
    assert claims(np.zeros(3, dtype=np.float32))
    assert claims({"w": np.ones(2)})
    assert claims(pa.table({"x": [1]}))
    for plain in (1, "s", None, [1, 2], {"a": 1}, np.float32(1.5)):
        assert not claims(plain), plain
    assert not claims(object())  # no stowage value: pickle's
    assert not claims([np.ones(2), np.ones(3)])  # several leaves: never one blob
    assert not claims(Model)  # classes are opt-in
    # Values that would not load as themselves stay with pickle.
    assert not claims(np.ma.masked_array([1.0, 2.0], mask=[False, True]))
    assert not claims(np.arange(2).view(Tagged))
    assert not claims(pa.record_batch({"x": [1]}))
    assert not claims(pa.RecordBatchReader.from_batches(pa.schema([("x", pa.int64())]), []))
    assert not claims(collections.OrderedDict(w=np.ones(2)))
    assert claims(stowage.TensorMap({"w": np.ones(2)}, metadata={"k": "v"}))
    monkeypatch.setattr(metaflow_config, "STOWAGE_CLASSES", True, raising=False)
    assert claims(Model)
    monkeypatch.setattr(metaflow_config, "STOWAGE_PLAIN", True, raising=False)
    assert claims({"a": 1}) and claims(1)


def test_serialize_returns_one_uncompressed_blob_and_stowage_metadata(tmp_path):
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    blobs, meta = StowageSerializer.serialize(array)
    assert len(blobs) == 1 and not blobs[0].is_reference
    # Plain safetensors bytes: Metaflow gzips, the serializer never does.
    np.testing.assert_array_equal(safetensors.numpy.load(blobs[0].value)["tensor"], array)
    assert meta.obj_type == "numpy.ndarray"
    assert meta.encoding == "stowage:safetensors;v=1;obj_type=tensor;blob=data;by=tensor@0.1.0"
    assert meta.size == len(blobs[0].value)
    assert meta.serializer_info == {
        "stowage_obj_type": "tensor",
        "stowage_encoding_version": 1,
        "stowage_serializer": "tensor",
        "stowage_serializer_version": "0.1.0",
        "stowage_blob": "data",
    }
    assert "source" not in meta.serializer_info


def test_serialize_is_side_effect_free(tmp_path):
    array = np.arange(4, dtype=np.int16)
    first = StowageSerializer.serialize(array)
    second = StowageSerializer.serialize(array)
    assert first[0][0].value == second[0][0].value and first[1] == second[1]
    assert list(tmp_path.iterdir()) == []  # no store, no file
    np.testing.assert_array_equal(array, np.arange(4, dtype=np.int16))


def test_wire_format_is_not_implemented_as_for_pickle():
    with pytest.raises(NotImplementedError) as raised:
        StowageSerializer.serialize(np.ones(2), format=SerializationFormat.WIRE)
    assert str(raised.value).startswith("StowageSerializer does not support the WIRE format")
    with pytest.raises(NotImplementedError):
        StowageSerializer.deserialize("x", None, format=SerializationFormat.WIRE)


def test_loads_give_writable_arrays_and_pyarrow_tables():
    array = np.arange(6, dtype=np.float64)
    blobs, meta = StowageSerializer.serialize(array)
    assert StowageSerializer.can_deserialize(meta)
    loaded = StowageSerializer.deserialize([blobs[0].value], meta)
    loaded += 1  # as a later step may do
    np.testing.assert_array_equal(loaded, array + 1)
    weights = StowageSerializer.deserialize(*_round({"w": np.ones(2)}))
    weights["w"] *= 3
    np.testing.assert_array_equal(weights["w"], [3.0, 3.0])
    table = pa.table({"x": [1, 2]})
    assert StowageSerializer.deserialize(*_round(table)).equals(table)


def test_loads_need_only_the_encoding_as_metaflows_client_gives_it(monkeypatch):
    monkeypatch.setattr(metaflow_config, "STOWAGE_CLASSES", True, raising=False)
    data, meta = _round(Model)
    assert meta.encoding == (
        "stowage:python-class-source;v=1;obj_type=class_source;blob=source;by=class-source@0.1.0"
        f";info.lines=2;info.module={__name__};info.qualname=Model;info.size=22"
    )
    bare = meta._replace(serializer_info={}, obj_type=None, size=0)
    loaded = StowageSerializer.deserialize(data, bare)
    assert (loaded.qualname, loaded.module) == ("Model", __name__)
    weights = StowageSerializer.deserialize(*_round({"w": np.ones(2)}))
    assert isinstance(weights, stowage.TensorMap)  # obj_type from the encoding


def test_encoding_fields_are_percent_encoded():
    meta = {
        "obj_type": "tensor",
        "encoding": "safetensors",
        "encoding_version": 1,
        "serializer": "x",
        "serializer_version": "1.0",
        "serializer_info": {"a;b": "c=d%e é"},
    }
    encoding = encode(meta, "blob;1")
    assert encoding == "stowage:safetensors;v=1;obj_type=tensor;blob=blob%3B1;by=x@1.0;info.a%3Bb=c%3Dd%25e%20%C3%A9"
    assert decode(encoding) == (meta, "blob;1")


def _round(obj):
    blobs, meta = StowageSerializer.serialize(obj)
    return [blobs[0].value], meta


def test_can_deserialize_only_stowage_encodings_with_an_active_reader(tmp_path):
    _, meta = StowageSerializer.serialize(np.ones(2))
    assert StowageSerializer.can_deserialize(meta)
    assert not StowageSerializer.can_deserialize(meta._replace(encoding="pickle-v4"))
    assert not StowageSerializer.can_deserialize(meta._replace(encoding="stowage:unknown"))
    (tmp_path / "plugins.toml").write_text("[plugins.tensor]\nenabled = false\n")
    StowageSerializer._hosts.clear()
    assert not StowageSerializer.can_deserialize(meta)


def test_classes_load_as_class_source(monkeypatch):
    monkeypatch.setattr(metaflow_config, "STOWAGE_CLASSES", True, raising=False)
    loaded = StowageSerializer.deserialize(*_round(Model))
    assert isinstance(loaded, stowage.ClassSource) and loaded.qualname == "Model"
