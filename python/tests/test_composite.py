"""Composites from Python (SPEC §15, issue #15 item 6): nested dicts, lists
and tuples holding numpy arrays, Arrow tables and classes are stored as one
composite, each leaf in its own format, and load back to the same structure
(tuples as lists); the CLI's directory export reads with the usual tools."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pytest
from safetensors.numpy import load_file

import stowage

from conftest import cli


class Net:
    layers = 2


def checkpoint():
    return {
        "weights": {"w1": np.arange(6, dtype=np.float32).reshape(2, 3), "w2": np.ones(4, dtype=np.int64)},
        "optimizer": {"lr": 1e-3, "state": (np.zeros(3, dtype=np.float64), np.full(2, 7, dtype=np.uint8))},
        "step": 1200,
        "eval": {"table": pa.table({"id": [1, 2, 3], "score": [0.5, 0.25, 0.125]}), "note": "ok"},
        "model": Net,
        "frames": [np.array([1, 2], dtype=np.int16), None, "plain"],
    }


def test_nested_structure_is_one_composite_record(host):
    record = host.save("ckpt", checkpoint())
    assert (record["encoding"], record["written_by"]["serializer"], record["format_version"]) == (
        "stowage-composite",
        "composite",
        2,
    )
    parts = [(p["path"], p["kind"], p["written_by"]["serializer"], p["encoding"]) for p in record["parts"]]
    assert parts == [
        ("weights", "tensor_map", "tensor", "safetensors"),
        ("optimizer/state/0", "tensor", "tensor", "safetensors"),
        ("optimizer/state/1", "tensor", "tensor", "safetensors"),
        ("eval/table", "arrow", "arrow", "arrow-ipc-file"),
        ("model", "class_source", "class-source", "python-class-source"),
        ("frames/0", "tensor", "tensor", "safetensors"),
    ]
    assert host.inspect("ckpt")["parts"] == record["parts"]


@pytest.mark.parametrize("mapped", [False, True])
def test_nested_structure_loads_back_the_same_with_tuples_as_lists(host, mapped):
    original = checkpoint()
    host.save("ckpt", original)
    back = host.load("ckpt", mapped=mapped)
    assert list(back) == list(original)
    assert set(back["weights"]) == {"w1", "w2"}
    for key, array in original["weights"].items():
        assert back["weights"][key].dtype == array.dtype
        assert (back["weights"][key] == array).all()
    assert back["optimizer"]["lr"] == 1e-3
    state = back["optimizer"]["state"]
    assert isinstance(state, list) and len(state) == 2
    assert (state[0] == 0).all() and state[1].tolist() == [7, 7]
    assert back["step"] == 1200
    assert back["eval"]["table"].equals(original["eval"]["table"])
    assert back["eval"]["note"] == "ok"
    assert isinstance(back["model"], stowage.ClassSource)
    assert back["model"].qualname == "Net"
    assert "layers = 2" in back["model"].source
    assert back["frames"][0].tolist() == [1, 2] and back["frames"][1:] == [None, "plain"]


def test_a_leaf_nothing_takes_names_its_path(make_config):
    # The bundled arrow plugin is disabled by the config.
    h = stowage.Host(make_config(("tensor",), extra="[plugins.arrow]\nenabled = false\n"))
    # The part's failure is classed by its own cause and names the part's path.
    with pytest.raises(stowage.NoSerializer) as error:
        h.save("ckpt", {"eval": {"table": pa.table({"x": [1]})}, "w": [np.ones(2)]})
    assert str(error.value) == (
        "cannot store ckpt: eval/table: no serializer accepted the arrow value; no active candidate"
    )


def test_directory_export_reads_with_json_safetensors_and_pyarrow(host, tmp_path):
    host.save("ckpt", checkpoint())
    out = tmp_path / "out"
    config = tmp_path / "plugins.toml"  # the host fixture's
    cli(config, "get", "ckpt", "-o", str(out))
    skeleton = json.loads((out / "skeleton.json").read_text())
    weights = load_file(os.path.join(out, skeleton["weights"]["$file"]))
    assert skeleton["weights"]["$keys"] == ["w1", "w2"]
    assert weights["w1"].tolist() == [[0, 1, 2], [3, 4, 5]]
    table = pa.ipc.open_file(os.path.join(out, skeleton["eval"]["table"]["$file"])).read_all()
    assert table.column("score").to_pylist() == [0.5, 0.25, 0.125]
    assert skeleton["optimizer"]["lr"] == 1e-3 and skeleton["step"] == 1200
    source = (out / skeleton["model"]["$file"]).read_text()
    assert source.startswith("class Net:")
    cli(config, "put", "back", str(out))
    back = host.load("back")
    assert back["frames"][0].tolist() == [1, 2]
