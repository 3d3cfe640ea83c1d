"""The README's "From Python" example runs verbatim, with no config file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def python_example() -> str:
    text = README.read_text()
    section = text.split("### From Python", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section has one python example"
    return blocks[0]


def test_readme_python_example_runs_verbatim_without_a_config(tmp_path):
    result = subprocess.run([sys.executable, "-c", python_example()], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "{'serializer': 'tensor', 'version': '0.1.0'} 120\n"
        "False\n"
        "3\n"
        "{'loss': 0.25, 'steps': [1, 2]}\n"
        "tensor active bundled\n"
        "arrow active bundled\n"
        "class-source active bundled\n"
        "composite active builtin\n"
        "msgpack active builtin\n"
    )
    assert (tmp_path / "store" / "index.log").exists()
