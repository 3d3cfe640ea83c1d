"""Shared fixtures of the stowage pytest suite.

The suite runs under ``cargo test`` (tests/tests/it/python.rs), which builds
and installs the package and passes the built plugin libraries and the
``stowage`` binary through ``STOWAGE_TEST_*`` variables. Without them the
suite fails: it never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import pytest

PLUGINS = {
    "tensor": ("STOWAGE_TEST_LIB_TENSOR", "libstowage_tensor.so"),
    "arrow": ("STOWAGE_TEST_LIB_ARROW", "libstowage_arrow.so"),
    "class-source": ("STOWAGE_TEST_LIB_CLASS_SOURCE", "libstowage_class_source.so"),
    "panicky": ("STOWAGE_TEST_LIB_PANICKY", "libstowage_panicky.so"),
    "echo": ("STOWAGE_TEST_LIB_ECHO", "libstowage_echo.so"),
}


def env(key: str) -> str:
    value = os.environ.get(key)
    if not value:
        raise RuntimeError(f"{key} is not set: run the suite through `cargo test -p stowage-tests --test it python::`")
    return value


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Path]:
    """``make_config(plugins, extra="")``: a plugins.toml in ``tmp_path`` with
    ``plugin-libs/`` holding copies of the named plugins and ``store/``."""

    def make(plugins: tuple[str, ...] = ("tensor", "arrow", "class-source"), extra: str = "") -> Path:
        libs = tmp_path / "plugin-libs"
        libs.mkdir(exist_ok=True)
        for name in plugins:
            key, file = PLUGINS[name]
            # Temp name, then rename: overwriting a loaded library in place
            # would change the code under the running process. A hard link
            # where it can (debug plugins are ~100 MB, and each test has
            # its own directory), a copy across file systems.
            temp = libs / f".{file}.tmp"
            try:
                os.link(env(key), temp)
            except OSError:
                shutil.copy(env(key), temp)
            os.replace(temp, libs / file)
        config = tmp_path / "plugins.toml"
        config.write_text(f'[host]\ndir = "plugin-libs"\n[store]\ndir = "store"\n{extra}')
        return config

    return make


@pytest.fixture
def host(make_config: Callable[..., Path]):
    import stowage

    return stowage.Host(make_config())


def cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The ``stowage`` binary with ``--config config``."""
    scrubbed = {k: v for k, v in os.environ.items() if not k.startswith("STOWAGE_")}
    return subprocess.run(
        [env("STOWAGE_TEST_BIN"), "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=scrubbed,
        check=check,
    )


def mappings() -> list[tuple[int, int, str]]:
    """File-backed mappings of this process: (start, end, path)."""
    out = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/"):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                out.append((start, end, parts[5]))
    return out


def mapping_of(address: int) -> str | None:
    """The file mapped at ``address``, if any."""
    for start, end, path in mappings():
        if start <= address < end:
            return path
    return None
