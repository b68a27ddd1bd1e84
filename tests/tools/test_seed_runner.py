"""benches/run_seed_e2e_bench.py --results: a lab run's seed facts as the table, and a clear
error (never a traceback) for a file that is not such a run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNNER = REPO / "benches" / "run_seed_e2e_bench.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUNNER), *args], capture_output=True, text=True, check=False
    )


def _scenario(total: float, functions: int) -> dict[str, object]:
    timing = {"plan_s": 4.0, "qemu_start_s": 8.0, "guest_boot_s": total - 12.0}
    return {"timing": {**timing, "to_devices_s": total}, "plan": {"functions": [{}] * functions}}


def test_a_lab_run_renders_each_scenario_against_its_baseline(tmp_path: Path) -> None:
    scenarios = {
        "baseline": _scenario(80.0, 0),
        "numa": _scenario(100.0, 2),
        "root-port": {"failed_stage": "guest-boot", "timing": {"plan_s": 4.0}},
    }
    results = {
        "suite": "lab",
        "checks": {"seed_e2e": {"status": "done", "facts": {"scenarios": scenarios}}},
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    done = _run("--results", str(path))
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| numa")]
    assert rows == ["| numa (2 functions, lab kernel) | 4.0 s | 8.0 s | 88.0 s | 100.0 s | 1.25 |"]
    assert "| root-port | failed at guest-boot |" in done.stdout


def test_a_file_that_is_no_lab_run_is_named_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "broken.json").write_text("{")
    for name, words in (
        ("missing.json", "cannot read"),
        ("broken.json", "cannot read"),
        ("empty.json", "no seed_e2e check"),
    ):
        done = _run("--results", str(tmp_path / name))
        assert done.returncode == 1
        assert f"{tmp_path / name}: " in done.stderr and words in done.stderr
        assert "Traceback" not in done.stderr
