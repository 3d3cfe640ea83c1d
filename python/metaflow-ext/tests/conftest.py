"""Shared fixtures of the stowage-metaflow tests.

They run under ``cargo test`` (tests/tests/it/metaflow.rs), which installs
the ``stowage`` wheel and this distribution into the interop venv. Flows run
as real ``python flow.py run`` processes on Metaflow's local datastore in a
temp directory, with a Metaflow home and a working directory of their own
(no ``plugins.toml`` there: stowage's bundled plugins).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FLOWS = Path(__file__).resolve().parent / "flows"


def metaflow_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a flow run or client read rooted at ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STOWAGE_", "METAFLOW_"))}
    (root / "home").mkdir(parents=True, exist_ok=True)
    env.update(
        METAFLOW_HOME=str(root / "home"),
        METAFLOW_DEFAULT_DATASTORE="local",
        METAFLOW_DEFAULT_METADATA="local",
        METAFLOW_DATASTORE_SYSROOT_LOCAL=str(root / "datastore"),
        USERNAME="stowage-test",
    )
    env.update(extra)
    return env


def run_python(code: str, cwd: Path, env: dict[str, str]) -> str:
    """Runs ``code`` in a fresh interpreter; returns stdout, failing with stderr."""
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


class FlowRun:
    """One finished run of ``flows/stowage_flow.py``."""

    def __init__(self, root: Path):
        self.root = root
        self.cwd = root / "cwd"
        self.cwd.mkdir(parents=True)
        self.env = metaflow_env(root)
        run = subprocess.run(
            [sys.executable, str(FLOWS / "stowage_flow.py"), "--quiet", "run"],
            cwd=self.cwd,
            env=metaflow_env(root, METAFLOW_STOWAGE_CLASSES="true"),
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        self.flow_dir = root / "datastore" / ".metaflow" / "StowageFlow"
        (self.run_dir,) = [p for p in self.flow_dir.iterdir() if p.is_dir() and p.name.isdigit()]

    def task_info(self, step: str) -> dict:
        (data,) = (self.run_dir / step).glob("*/0.data.json")
        return json.loads(data.read_text())

    def blob(self, step: str, artifact: str) -> bytes:
        """An artifact's stored bytes as Metaflow's datastore holds them."""
        key = self.task_info(step)["objects"][artifact]
        return (self.flow_dir / "data" / key[:2] / key).read_bytes()


@pytest.fixture(scope="session")
def flow_run(tmp_path_factory) -> FlowRun:
    return FlowRun(tmp_path_factory.mktemp("flow"))
