"""The Host API against a real store and real plugins: records, errors,
warnings, zero-copy proofs, threads, the CLI's JSON shapes and crossings
between Python, the CLI and Rust."""

from __future__ import annotations

import gc
import json
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import cli, mapping_of

import stowage


def test_save_returns_the_inspect_record(host):
    record = host.save("a", [1, 2])
    assert record == host.inspect("a")
    assert list(record) == ["name", "obj_type", "caller_type", "encoding", "encoding_version", "blobs", "written_by", "serializer_info", "created", "format_version"]
    assert record["serializer_info"] == {"source": "api"}
    assert [r["name"] for r in host.ls()] == ["a"]


def test_records_match_the_cli_json(host, make_config):
    host.save("x", np.arange(4, dtype=np.float32))
    config = make_config()
    assert json.loads(cli(config, "inspect", "x", "--json").stdout) == host.inspect("x")
    assert json.loads(cli(config, "ls", "--json").stdout) == host.ls()


def test_rm_then_load_is_not_found_which_is_a_key_error(host):
    host.save("gone", 1)
    host.rm("gone")
    with pytest.raises(stowage.NotFound) as raised:
        host.load("gone")
    assert isinstance(raised.value, KeyError) and isinstance(raised.value, stowage.Error)
    assert str(raised.value) == "no artifact named gone"
    with pytest.raises(KeyError):
        host.inspect("gone")
    with pytest.raises(stowage.NotFound):
        host.rm("gone")


def test_gc_and_verify_report(host):
    host.save("big", np.ones(1 << 18, dtype=np.float32))
    host.rm("big")
    report = host.gc()
    assert report["blob_files_removed"] == 1 and report["bytes_freed"] > 1 << 20
    host.save("small", "x")
    assert host.verify() == {"ok": True, "artifacts": 1, "blobs": 1, "bytes": host.inspect("small")["blobs"][0]["size"], "issues": []}


def test_save_many_is_all_or_nothing(host):
    records = host.save_many({"a": 1, "b": np.zeros(2)})
    assert [r["name"] for r in records] == ["a", "b"]
    with pytest.raises(stowage.Error) as raised:
        host.save_many({"c": 1, "d/e": 2})
    assert str(raised.value) == 'invalid artifact name "d/e": contains \'/\''
    assert sorted(r["name"] for r in host.ls()) == ["a", "b"]


def test_load_many_returns_values_in_order_and_names_a_missing_one(host):
    host.save_many({"a": 1, "b": np.arange(3, dtype=np.int64), "c": {"k": [1, 2]}})
    got = host.load_many(["c", "a", "b", "a"])
    assert got[0] == {"k": [1, 2]} and got[1] == 1 and got[3] == 1
    assert np.array_equal(got[2], np.arange(3, dtype=np.int64))
    assert host.load_many([]) == []
    assert host.load_many(["a"], mapped=True) == [1]
    with pytest.raises(stowage.NotFound) as raised:
        host.load_many(["a", "nope"])
    assert str(raised.value) == "no artifact named nope"
    with pytest.raises(TypeError):
        host.load_many("abc")


def raw_blob(host, name: str, store: Path) -> Path:
    blob = host.inspect(name)["blobs"][0]
    assert blob["storage"] == "raw"
    return store / "blobs" / blob["digest"][:2] / blob["digest"]


def test_corrupt_blob_is_an_integrity_error(host, tmp_path):
    array = np.ones(1 << 18, dtype=np.float32)
    host.save("c", array)
    path = raw_blob(host, "c", tmp_path / "store")
    digest = path.name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(stowage.IntegrityError) as raised:
        host.load("c")
    assert str(raised.value).startswith(f"blob data of artifact c is corrupt: expected blake3 {digest}, got ")
    report = host.verify()
    assert not report["ok"] and report["issues"][0]["artifact"] == "c"


def test_mapped_load_points_into_the_store_mapping_and_outlives_the_host(make_config, tmp_path):
    h = stowage.Host(make_config())
    h.save("m", np.arange(1 << 18, dtype=np.float32))
    blob = raw_blob(h, "m", tmp_path / "store")
    loaded = h.load("m", mapped=True)
    verified = h.load("m")
    del h
    gc.collect()
    for array in (loaded, verified):
        address = array.__array_interface__["data"][0]
        assert mapping_of(address) == str(blob)
        assert not array.flags.writeable
        with pytest.raises(ValueError):
            array[0] = 1
    assert loaded[-1] == (1 << 18) - 1


def test_mapped_arrow_buffers_lie_inside_the_mapping(host, tmp_path):
    table = pa.table({"x": np.arange(1 << 16, dtype=np.int64)})
    host.save("t", table)
    loaded = host.load("t", mapped=True)
    buffer = loaded.column("x").chunks[0].buffers()[1]
    assert mapping_of(buffer.address) == str(raw_blob(host, "t", tmp_path / "store"))


def rss_anon() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon")


def peak_rss_growth(save) -> int:
    """RssAnon growth at its peak (sampled every millisecond) during save()."""
    baseline = rss_anon()
    peak = baseline
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_anon())
            done.wait(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        save()
    finally:
        done.set()
        sampler.join()
    return max(peak, rss_anon()) - baseline


def test_saving_a_pyarrow_table_shares_its_buffers(host):
    table = pa.table({"x": np.arange(8 << 20, dtype=np.int64)})
    growth = peak_rss_growth(lambda: host.save("t", table))
    assert growth < table.nbytes // 10, f"RssAnon grew by {growth} bytes saving {table.nbytes}"


def test_saving_an_array_borrows_its_buffer(host):
    size = 64 << 20
    array = np.ones(size // 4, dtype=np.float32)
    baseline = rss_anon()
    peak = baseline
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_anon())
            done.wait(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        host.save("big", array)
    finally:
        done.set()
        sampler.join()
    assert peak - baseline < size // 10, f"RssAnon grew by {peak - baseline} bytes saving {size}"


def test_eight_threads_save_at_once(host):
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(i: int):
        try:
            barrier.wait()
            for j in range(10):
                host.save(f"t{i}-{j}", np.full(1000, i * 100 + j, dtype=np.int32))
                host.save(f"p{i}-{j}", {"i": i, "j": j})
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(host.ls()) == 160
    for i in range(8):
        for j in range(10):
            np.testing.assert_array_equal(host.load(f"t{i}-{j}"), np.full(1000, i * 100 + j, dtype=np.int32))
            assert host.load(f"p{i}-{j}") == {"i": i, "j": j}
    assert host.verify()["ok"]


def test_failing_plugin_warns_and_the_next_candidate_saves(make_config):
    h = stowage.Host(make_config(("panicky", "echo")))
    with pytest.warns(stowage.PluginWarning) as caught:
        record = h.save("s", "panic:serialize")
    assert record["written_by"]["serializer"] == "echo"
    assert [str(w.message) for w in caught] == [
        "skipped plugin panicky: dispatch: serialize: panic: panicked in serialize: fixture panic in serialize at tests/fixtures/common/src/lib.rs:54"
    ]
    assert issubclass(stowage.PluginWarning, UserWarning)


def test_no_candidate_left_is_no_serializer_with_each_message(make_config):
    h = stowage.Host(make_config(("echo",), "[plugins.msgpack]\nenabled = false\n"))
    with pytest.raises(stowage.NoSerializer) as raised:
        h.save("s", "invalid:bad header")
    assert str(raised.value) == "cannot store s: echo: bad header"
    assert h.ls() == []


def test_missing_plugin_is_a_plugin_error(make_config, tmp_path):
    config = make_config()
    stowage.Host(config).save("a", np.ones(2))
    config.write_text(config.read_text() + "[plugins.tensor]\nenabled = false\n")
    with pytest.raises(stowage.PluginError) as raised:
        stowage.Host(config).load("a")
    assert str(raised.value) == (
        "cannot load a: no deserializer for encoding safetensors; written by tensor 0.1.0 — is it installed and enabled?"
    )


def test_bad_config_is_a_config_error(tmp_path):
    config = tmp_path / "plugins.toml"
    config.write_text("[host\n")
    with pytest.raises(stowage.ConfigError):
        stowage.Host(config)
    with pytest.raises(stowage.ConfigError):
        stowage.Host(tmp_path / "absent.toml")


def test_status_has_the_cli_json_shape(make_config):
    config = make_config()
    h = stowage.Host(config)
    ours = h.status()
    theirs = json.loads(cli(config, "status", "--json").stdout)
    assert list(ours) == list(theirs) == ["config", "dir", "serializers", "warnings"]
    assert (ours["config"], ours["dir"]) == (theirs["config"], theirs["dir"])
    by_name = {s["name"]: s for s in ours["serializers"]}
    for row in theirs["serializers"]:
        mine = by_name[row["name"]]
        assert list(mine) == list(row)
        for key in row:
            if key not in ("load_ms",):
                assert mine[key] == row[key], key


def test_disable_and_enable_edit_the_config_like_the_cli(make_config):
    config = make_config()
    h = stowage.Host(config)
    h.disable("tensor")
    assert "[plugins.tensor]\nenabled = false" in config.read_text()
    tensor = next(s for s in h.status()["serializers"] if s["name"] == "tensor")
    assert (tensor["state"], tensor["enabled"]) == ("disabled", False)
    with pytest.raises(stowage.NoSerializer):
        h.save("a", np.ones(2))
    h.enable("tensor")
    tensor = next(s for s in h.status()["serializers"] if s["name"] == "tensor")
    assert (tensor["state"], tensor["enabled"]) == ("active", True)


def test_explain_lists_candidates_and_the_winner(make_config):
    h = stowage.Host(make_config(("panicky", "echo")))
    assert h.explain("hello") == {
        "subject": "a string value",
        "candidates": [
            {"plugin": "panicky", "priority": 10, "answer": "accepted"},
            {"plugin": "echo", "priority": 50, "answer": "not asked"},
            {"plugin": "msgpack", "priority": 9999, "answer": "not asked"},
        ],
        "winner": "panicky",
    }


def test_explain_of_a_composite_decides_part_by_part(host):
    checkpoint = {"weights": np.ones(3, dtype=np.float32), "table": pa.table({"x": [1]}), "step": 7}
    explained = host.explain(checkpoint)
    assert explained["subject"] == "a map value"
    assert explained["winner"] == "composite"
    parts = {part["path"]: part for part in explained["parts"]}
    assert list(parts) == ["weights", "table"]
    assert list(parts["weights"]) == ["path", "candidates", "winner"]
    assert (parts["weights"]["winner"], parts["table"]["winner"]) == ("tensor", "arrow")
    accepted = [c["plugin"] for c in parts["table"]["candidates"] if c["answer"] == "accepted"]
    assert accepted[0] == "arrow"
    assert "parts" not in host.explain({"step": 7})


def test_serialize_and_deserialize_need_no_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    h = stowage.Host()
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    blobs, meta = h.serialize(array)
    assert meta == {
        "obj_type": "tensor",
        "encoding": "safetensors",
        "encoding_version": 1,
        "serializer": "tensor",
        "serializer_version": "0.1.0",
        "serializer_info": {},
        "caller_type": "numpy.ndarray",
    }
    assert list(blobs) == ["data"] and isinstance(blobs["data"], bytes)
    np.testing.assert_array_equal(h.deserialize(blobs, meta), array)
    blobs, meta = h.serialize({"k": [1, None]})
    assert h.deserialize(blobs, meta) == {"k": [1, None]}
    assert list(tmp_path.iterdir()) == []


def test_config_less_host_has_the_bundled_plugins_and_stores_in_dot_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    h = stowage.Host()
    rows = {s["name"]: (s["state"], s["origin"]) for s in h.status()["serializers"]}
    assert rows == {
        "tensor": ("active", "bundled"),
        "arrow": ("active", "bundled"),
        "class-source": ("active", "bundled"),
        "msgpack": ("active", "builtin"),
        "composite": ("active", "builtin"),
    }
    h.save("a", np.ones(2))
    assert (tmp_path / "store" / "index.log").exists()


def test_config_can_disable_a_bundled_plugin(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plugins.toml").write_text("[plugins.arrow]\nenabled = false\n")
    rows = {s["name"]: (s["state"], s["origin"]) for s in stowage.Host().status()["serializers"]}
    assert rows["arrow"] == ("disabled", "bundled")
    assert rows["tensor"] == ("active", "bundled")


def test_artifacts_cross_python_cli_python(make_config, tmp_path):
    config = make_config()
    h = stowage.Host(config)
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    h.save("py", array)
    out = tmp_path / "py.safetensors"
    cli(config, "get", "py", "-o", str(out))
    cli(config, "put", "from-cli", str(out))
    # A safetensors file is a tensor map; `get` names a lone tensor "tensor".
    np.testing.assert_array_equal(h.load("from-cli")["tensor"], array)
    document = tmp_path / "doc.json"
    document.write_text('{"a": [1, 2.5]}')
    cli(config, "put", "json", "--json", str(document))
    assert h.load("json") == {"a": [1, 2.5]}


def test_artifact_saved_by_rust_loads_in_python(tmp_path):
    h = stowage.Host(os.environ["STOWAGE_TEST_RUST_CONFIG"])
    loaded = h.load("from-rust")
    np.testing.assert_array_equal(loaded, np.array([1.5, -2.0, 3.25], dtype=np.float32))


def test_a_configured_library_overrides_the_bundled_one(make_config):
    config = make_config(("tensor",))
    rows = {s["name"]: s for s in stowage.Host(config).status()["serializers"]}
    assert (rows["tensor"]["origin"], rows["tensor"]["library"]) == ("directory", str(config.parent / "plugin-libs" / "libstowage_tensor.so"))
    assert (rows["arrow"]["state"], rows["arrow"]["origin"]) == ("active", "bundled")
    assert rows["arrow"]["library"] == str(Path(stowage.__file__).parent / "plugins" / "libstowage_arrow.so")
