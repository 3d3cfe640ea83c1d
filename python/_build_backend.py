"""PEP 517 backend for ``pip install ./python``: maturin, plus the three
plugins built from this workspace and copied into ``stowage/plugins/`` so
the wheel carries them (origin ``bundled``; SPEC §12).

Set ``STOWAGE_BUNDLED_PLUGINS`` to a directory of already built plugin
libraries to copy those instead of running cargo (the test harness does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import maturin
from maturin import *  # noqa: F401,F403  (the other PEP 517 hooks)

HERE = Path(__file__).resolve().parent
PLUGINS = ("stowage-tensor", "stowage-arrow", "stowage-class-source")
STEMS = ("stowage_tensor", "stowage_arrow", "stowage_class_source")
SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
PREFIX = "" if sys.platform == "win32" else "lib"


def _bundle_plugins() -> None:
    target = HERE / "stowage" / "plugins"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    prebuilt = os.environ.get("STOWAGE_BUNDLED_PLUGINS")
    if prebuilt:
        files = [Path(prebuilt) / f"{PREFIX}{stem}{SUFFIX}" for stem in STEMS]
    else:
        command = ["cargo", "build", "--release", "--message-format=json-render-diagnostics",
                   "--manifest-path", str(HERE.parent / "Cargo.toml")]
        for package in PLUGINS:
            command += ["-p", package]
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        files = []
        for line in output.splitlines():
            message = json.loads(line)
            if message.get("reason") == "compiler-artifact" and "cdylib" in message["target"]["kind"]:
                files += [Path(f) for f in message["filenames"] if f.endswith(SUFFIX)]
    for file in files:
        shutil.copy2(file, target / file.name)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    _bundle_plugins()
    return maturin.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    _bundle_plugins()
    return maturin.build_editable(wheel_directory, config_settings, metadata_directory)
