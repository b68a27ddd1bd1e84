"""Small helpers shared by the guest-side checks."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from kata_vfio import binding


@contextlib.contextmanager
def bound(bdfs: list[str], *, group: bool = True) -> Iterator[None]:
    """``bdfs`` on vfio-pci for the ``with`` body (through the project), then restored."""
    with tempfile.TemporaryDirectory(prefix="kvlab-journal-") as state_dir:
        binding.bind(bdfs, group=group, state_dir=state_dir)
        try:
            yield
        finally:
            binding.restore(state_dir=state_dir)


def cli_check_open(bdf: str) -> dict[str, Any]:
    """``kata-vfio check --open BDF --json``: exit code, parsed output, stderr tail."""
    done = subprocess.run(
        [sys.executable, "-m", "kata_vfio", "check", "--open", bdf, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        output = json.loads(done.stdout)
    except json.JSONDecodeError:
        output = None
    return {"rc": done.returncode, "output": output, "stderr": done.stderr[-2000:]}
