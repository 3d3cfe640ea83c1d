"""The README's "Using stowage from Metaflow" flow runs verbatim, and its
status example prints what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import metaflow_env, run_python

README = Path(__file__).resolve().parents[3] / "README.md"


def examples() -> list[str]:
    section = README.read_text().split("### Using stowage from Metaflow", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_flow_runs_verbatim_and_stores_through_stowage(tmp_path):
    flow, status = examples()
    (tmp_path / "train_flow.py").write_text(flow)
    env = metaflow_env(tmp_path)
    run = subprocess.run([sys.executable, "train_flow.py", "--quiet", "run"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "16.0 3" in run.stdout + run.stderr
    check = """
from metaflow import Flow, namespace
namespace(None)
data = Flow("TrainFlow").latest_run["end"].task.data
print(data.weights.sum(), data.table.num_rows, data.params)
"""
    assert run_python(check, tmp_path, env) == "16.0 3 {'lr': 0.1}\n"
    expected = status.split("# ", 1)[1]
    assert run_python(status, tmp_path, env) == expected
