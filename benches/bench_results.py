"""The machine-readable results of the benchmark runners and the lab: one JSON file each.

A file holds runs, newest last; a run holds its date, the command that measured it and its
``figures``: the summary values the README quotes, each a number or a ``[low, high]`` range
(a run that summarizes several). ``tools/figures.py`` renders the README's marked blocks from
these files, so a figure in the README is always one a runner measured, never typed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def load(path: Path) -> dict[str, Any]:
    """The results file at ``path``; a clear error when it is missing or malformed."""
    try:
        data = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{path}: cannot read the results file: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise SystemExit(f"{path}: a results file is an object with a non-empty list 'runs'")
    return data


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a figure")


def record_run(path: Path, bench: str, figures: dict[str, Any], *, append: bool = True) -> None:
    """Adds this run's ``figures`` to the results file ``path`` (atomically); with
    ``append=False`` the run replaces what the file held."""
    runs: list[dict[str, Any]] = []
    if append and path.exists():
        runs = list(load(path)["runs"])
    runs.append(
        {
            "date": datetime.date.today().isoformat(),
            "command": " ".join(["python", *sys.argv]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}",
            "figures": figures,
        }
    )
    text = json.dumps({"bench": bench, "runs": runs}, indent=1, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as out:
        out.write(text)
    os.chmod(out.name, 0o644)  # a committed file, readable by all like the rest of the tree
    os.replace(out.name, path)
