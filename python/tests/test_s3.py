"""``stowage.Host(store="s3://bucket/prefix")`` against a real S3 server:
``s3s-fs`` (the binary the Rust harness installs, passed as
``STOWAGE_TEST_S3S_FS``), started by a fixture on 127.0.0.1 with a free
port and a scratch data directory, stopped when the test ends."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest
from conftest import env

import stowage

ACCESS_KEY = "stowage-pytest"
SECRET_KEY = "stowage-pytest-secret"
BUCKET = "stowage"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A running s3s-fs holding an empty bucket ``stowage``; its URL. The
    credentials it accepts are in the environment for the host."""
    data = tmp_path / "s3-data"
    (data / BUCKET).mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen(
        [env("STOWAGE_TEST_S3S_FS"), "--host", "127.0.0.1", "--port", str(port),
         "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"s3s-fs exited ({server.returncode}): {server.stderr.read().decode()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"s3s-fs did not listen on 127.0.0.1:{port} within 30 s")
                time.sleep(0.02)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def s3_config(make_config: Callable[..., Path], tmp_path: Path, s3_endpoint: str) -> Path:
    """A plugins.toml reaching the server (``[store.s3]``), with the S3
    store's local cache in ``tmp_path``."""
    return make_config(extra=f'cache = "{tmp_path / "cache"}"\n[store.s3]\nendpoint = "{s3_endpoint}"\n'
                             'region = "us-east-1"\nallow_http = true\n')


def test_s3_store_saves_loads_and_lists_through_the_server(s3_config: Path, tmp_path: Path):
    host = stowage.Host(s3_config, store=f"s3://{BUCKET}/team")
    array = np.arange(1000, dtype=np.float32) * np.float32(0.5)
    host.save("weights", array)
    host.save_many({"metrics": {"loss": 0.25, "step": 7}, "tags": ["a", "b"]})

    assert np.array_equal(host.load("weights"), array)
    assert host.load("metrics") == {"loss": 0.25, "step": 7}
    assert host.load("tags") == ["a", "b"]
    assert sorted(r["name"] for r in host.ls()) == ["metrics", "tags", "weights"]

    # A second host (another "machine": its own cache) sees the same store.
    other = tmp_path / "other.toml"
    other.write_text(s3_config.read_text().replace(str(tmp_path / "cache"), str(tmp_path / "cache-2")))
    again = stowage.Host(other, store=f"s3://{BUCKET}/team")
    assert np.array_equal(again.load("weights"), array)
    assert sorted(r["name"] for r in again.ls()) == ["metrics", "tags", "weights"]

    # Another prefix of the same bucket is another, empty store.
    assert stowage.Host(s3_config, store=f"s3://{BUCKET}/elsewhere").ls() == []

    assert again.load_many(["tags", "weights", "metrics"])[0] == ["a", "b"]
    assert np.array_equal(again.load_many(["weights"], mapped=True)[0], array)

    host.rm("tags")
    assert sorted(r["name"] for r in again.ls()) == ["metrics", "weights"]
    with pytest.raises(stowage.NotFound) as raised:
        again.load("tags")
    assert str(raised.value) == "no artifact named tags"
