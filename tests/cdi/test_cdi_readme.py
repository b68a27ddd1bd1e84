"""The README's CDI example runs as written and prints what the README says."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def cdi_section() -> str:
    text = README.read_text()
    start = text.index("\n## CDI\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_the_worked_example_runs(tmp_path: Path) -> None:
    if shutil.which("kata-vfio") is None or shutil.which("bash") is None:
        pytest.skip("needs the kata-vfio console script and bash")
    section = cdi_section()
    script = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    documented = re.search(r"prints\n\n```\n(.*?)```", section, re.DOTALL)
    assert script is not None and documented is not None
    demo = tmp_path / "cdi-demo"
    commands = script.group(1).replace("/tmp/cdi-demo", str(demo))
    done = subprocess.run(
        ["bash", "-e", "-c", commands], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    expected = documented.group(1).replace("/tmp/cdi-demo", str(demo))
    assert expected in done.stdout
    assert "nothing to do" in done.stdout.splitlines()[-2]
    config = json.loads((demo / "bundle" / "config.json").read_text())
    assert config["annotations"] == {"io.kubernetes.cri.container-type": "sandbox"}
    assert [d["path"] for d in config["linux"]["devices"]] == [
        "/dev/vfio/vfio",
        "/dev/vfio/14",
        "/dev/vfio/22",
    ]
