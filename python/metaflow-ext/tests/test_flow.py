"""A real Metaflow flow on the local datastore with the stowage serializer
installed (SPEC §12.4): what it stored, how, and how it reads back."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import safetensors.numpy
from conftest import run_python

READ_BACK = r"""
import json
import numpy as np
import pyarrow as pa
import stowage
from metaflow import Flow, namespace

namespace(None)
run = Flow("StowageFlow").latest_run
assert run.successful
start, mutate = run["start"].task.data, run["mutate"].task.data
arange = np.arange(12, dtype=np.float32).reshape(3, 4)
np.testing.assert_array_equal(start.arr, arange)
assert start.arr.dtype == np.float32 and start.arr.flags.writeable
np.testing.assert_array_equal(mutate.arr, arange + 1)
assert isinstance(start.weights, stowage.TensorMap) and sorted(start.weights) == ["b", "w"]
np.testing.assert_array_equal(start.weights["w"], np.ones((2, 2), dtype=np.float16))
np.testing.assert_array_equal(mutate.weights["w"], np.full((2, 2), 2, dtype=np.float16))
np.testing.assert_array_equal(start.weights["b"], np.arange(3))
table = pa.table({"x": pa.array([1, 2, None], pa.int64()), "s": ["a", "b", "c"]})
assert isinstance(start.table, pa.Table) and start.table.equals(table)
assert mutate.rows == 3
scaler = start.scaler
assert isinstance(scaler, stowage.ClassSource) and (scaler.qualname, scaler.module) == ("Scaler", "__main__")
assert scaler.build()().apply(2) == 6
assert start.plain == {"lr": 0.1, "tags": ["a", "b"]}
print("read back equal")
"""


def test_every_artifact_reads_back_equal_through_the_client(flow_run):
    assert run_python(READ_BACK, flow_run.cwd, flow_run.env) == "read back equal\n"


EXPECTED = {
    # name: (encoding, Python type, stowage serializer or None for pickle)
    "arr": ("stowage:safetensors", "numpy.ndarray", "tensor"),
    "weights": ("stowage:safetensors", "builtins.dict", "tensor"),
    "table": ("stowage:arrow-ipc-file", "pyarrow.lib.Table", "arrow"),
    "scaler": ("stowage:python-class-source", "type[__main__.Scaler]", "class-source"),
    "plain": ("pickle-v4", "<class 'dict'>", None),
}


def test_artifacts_are_stored_by_stowage_and_plain_data_by_pickle(flow_run):
    info = flow_run.task_info("start")["info"]
    rows = []
    for name, (encoding, obj_type, serializer) in EXPECTED.items():
        entry = info[name]
        assert (entry["encoding"].split(";")[0], entry["type"]) == (encoding, obj_type), name
        serializer_info = entry["serializer_info"]
        if serializer is None:
            assert serializer_info == {"source": "metaflow"}
        else:
            # Metaflow stamps `source` (the distribution); the rest is ours.
            assert serializer_info["source"] == "stowage-metaflow"
            assert serializer_info["stowage_serializer"] == serializer
            assert f";by={serializer}@0.1.0" in entry["encoding"]
            assert all(k.startswith("stowage_") for k in serializer_info if k != "source")
        rows.append(f"| {name} | {entry['encoding']} | {entry['size']} | {len(flow_run.blob('start', name))} |")
    report = os.environ.get("STOWAGE_TEST_REPORT")
    if report:
        with open(report, "w") as out:
            out.write("| artifact | encoding | size | stored (gzip) |\n|---|---|---|---|\n" + "\n".join(rows) + "\n")


def test_stored_blobs_are_plain_safetensors_and_arrow_ipc_after_gunzip(flow_run):
    arr = safetensors.numpy.load(gzip.decompress(flow_run.blob("start", "arr")))
    np.testing.assert_array_equal(arr["tensor"], np.arange(12, dtype=np.float32).reshape(3, 4))
    mutated = safetensors.numpy.load(gzip.decompress(flow_run.blob("mutate", "arr")))
    np.testing.assert_array_equal(mutated["tensor"], np.arange(12, dtype=np.float32).reshape(3, 4) + 1)
    weights = safetensors.numpy.load(gzip.decompress(flow_run.blob("start", "weights")))
    assert sorted(weights) == ["b", "w"]
    table = pa.ipc.open_file(pa.py_buffer(gzip.decompress(flow_run.blob("start", "table")))).read_all()
    assert table.equals(pa.table({"x": pa.array([1, 2, None], pa.int64()), "s": ["a", "b", "c"]}))
    source = gzip.decompress(flow_run.blob("start", "scaler")).decode()
    assert source.startswith("class Scaler:\n")


def test_list_serializer_status_lists_stowage_active_from_its_distribution(flow_run):
    code = """
import json
import metaflow.plugins
from metaflow.datastore.artifacts.diagnostic import list_serializer_status
print(json.dumps(list_serializer_status()))
"""
    records = {r["name"]: r for r in json.loads(run_python(code, flow_run.cwd, flow_run.env))}
    assert records["stowage"] == {
        "name": "stowage",
        "class_path": "metaflow_extensions.stowage.plugins.stowage_serializer.StowageSerializer",
        "state": "active",
        "awaiting_modules": [],
        "last_error": None,
        "priority": 50,
        "type": "stowage",
        "import_trigger": "eager",
        "dispatch_error_count": 0,
        "source": "stowage-metaflow",
    }
    assert (records["pickle"]["state"], records["pickle"]["priority"]) == ("active", 9999)


def test_a_disabled_stowage_plugin_fails_with_metaflows_missing_serializer_message(flow_run, tmp_path):
    (tmp_path / "plugins.toml").write_text("[plugins.tensor]\nenabled = false\n")
    code = f"""
from metaflow import Flow, namespace
from metaflow.datastore.flow_datastore import FlowDataStore
from metaflow.exception import MetaflowException
from metaflow.plugins.datastores.local_storage import LocalStorage
namespace(None)
task = Flow("StowageFlow").latest_run["start"].task
print(task.data.table.num_rows)
try:
    task.data.arr  # the client: it knows the encoding only
except MetaflowException as error:
    print(type(error).__name__, error.message)
flow_ds = FlowDataStore("StowageFlow", environment=None, metadata=None, event_logger=None,
                        monitor=None, storage_impl=LocalStorage, ds_root={str(flow_run.flow_dir.parent)!r})
task_ds = flow_ds.get_task_datastore(task.parent.parent.id, "start", task.id, mode="r")
try:
    dict(task_ds.load_artifacts(["arr"]))  # a step's own load: the full info
except MetaflowException as error:
    print(type(error).__name__, error.message)
"""
    out = run_python(code, tmp_path, flow_run.env)
    entry = flow_run.task_info("start")["info"]["arr"]
    encoding = entry["encoding"]
    assert encoding == "stowage:safetensors;v=1;obj_type=tensor;blob=data;by=tensor@0.1.0"
    assert out == (
        "3\n"
        f"DataException No deserializer claimed artifact 'arr' (encoding: {encoding}, serializer_info: {{}}).\n"
        f"DataException No deserializer claimed artifact 'arr' (encoding: {encoding}, "
        f"serializer_info: {entry['serializer_info']}). The artifact was written by 'stowage-metaflow' — "
        "the corresponding extension may not be installed.\n"
    )
    assert "'stowage_serializer': 'tensor'" in out
