"""Every benchmark runner still runs (CI smoke mode: tiny sizes, a round or two, no figure
asserted), writes its report and a results file, and tools/figures.py renders the README's
blocks from what it wrote: a runner that rots, or whose results drift from what the renderer
reads, fails here instead of on the day someone wants new figures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
import figures  # noqa: E402 (tools/figures.py)

# runner script -> (results name, its report option)
RUNNERS = {
    "run_scan_bench.py": ("scan", "--write"),
    "run_cdi_bench.py": ("cdi", "--output"),
    "test_sandbox_bench.py": ("sandbox", "--output"),
    "run_k8s_bench.py": ("k8s", "--output"),
}


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs every runner once with --smoke; the directory of their outputs."""
    out = tmp_path_factory.mktemp("bench-smoke")
    (out / "results").mkdir()
    for script, (name, report) in RUNNERS.items():
        done = subprocess.run(
            [sys.executable, str(REPO / "benches" / script), "--smoke",
             report, str(out / f"{name}.md"), "--results", str(out / "results" / f"{name}.json")],
            capture_output=True, text=True, timeout=300, check=False, cwd=out,
        )  # fmt: skip
        (out / f"{name}.log").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"{script} --smoke failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.mark.parametrize("name", [name for name, _ in RUNNERS.values()])
def test_each_runner_writes_its_report_and_one_run(smoke_runs: Path, name: str) -> None:
    assert (smoke_runs / f"{name}.md").read_text().startswith("# ")
    data = json.loads((smoke_runs / "results" / f"{name}.json").read_text())
    assert data["bench"] == name
    assert len(data["runs"]) == 1
    assert "--smoke" in data["runs"][0]["command"]
    assert data["runs"][0]["figures"]


def test_the_readme_blocks_render_from_fresh_results(smoke_runs: Path) -> None:
    shutil.copy(REPO / "benches" / "results" / "lab.json", smoke_runs / "results" / "lab.json")
    results = figures.load_results(smoke_runs / "results")
    for name, (_, render) in figures.BLOCKS.items():
        block = render(results)
        assert "not measured" not in block, f"{name}: a figure the renderer wants is missing"
    # The smoke sizes show: these blocks come from the runs just made, not the committed ones.
    assert "full scan, 100 functions" in figures.benchmarks_block(results)
    assert "(4 files, 40 devices)" in figures.benchmarks_block(results)
    assert "4 flips" in figures.k8s_block(results)
