"""tools/figures.py: the README's figures are what the committed results files render, so a
figure typed by hand (or a results file changed without re-rendering) fails here."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO / "tools" / "lab"))
import figures  # noqa: E402 (tools/figures.py)
from kvlab.ci import dra_figures, lab_figures, seed_figures  # noqa: E402

from bench_results import record_run  # noqa: E402 (benches/ is on the path via the tool)


def test_every_marked_block_is_what_the_committed_results_render() -> None:
    results = figures.load_results()
    assert set(results) >= {"scan", "cdi", "sandbox", "k8s", "lab"}
    for path, (now, rendered) in figures.rendered_files(REPO, results).items():
        assert now == rendered, f"{path}: stale or hand-typed figures; run python tools/figures.py"


def test_every_block_is_marked_where_it_belongs() -> None:
    for name, (file, _) in figures.BLOCKS.items():
        block = figures.marked_block((REPO / file).read_text(), name)
        assert block, f"{file} has no figures:{name} block"


def test_a_hand_typed_figure_is_caught() -> None:
    readme = (REPO / "README.md").read_text()
    typed = readme.replace("| 2.3x |", "| 2.0x |", 1)
    assert typed != readme
    results = figures.load_results()
    assert figures.render_file(typed, ["benchmarks"], results) == readme


def test_a_block_without_markers_is_an_error() -> None:
    with pytest.raises(SystemExit, match="has no markers"):
        figures.render_file("no markers here\n", ["k8s"], figures.load_results())


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A copy of the committed results files, to add runs to."""
    copy = tmp_path / "results"
    shutil.copytree(REPO / "benches" / "results", copy)
    return copy


def test_check_mode_exits_1_on_a_stale_block(results: Path) -> None:
    data = json.loads((results / "sandbox.json").read_text())
    data["runs"][0]["figures"]["sandbox_over_scan"] = 3.0
    (results / "sandbox.json").write_text(json.dumps(data))
    assert figures.main(["--check", "--results-dir", str(results)]) == 1
    assert figures.main(["--check"]) == 0


def test_ranges_span_every_run_and_equal_ends_print_once() -> None:
    runs = [{"figures": {"a": 1.18, "b": {"c": [2.0, 3.0]}}}, {"figures": {"a": 1.26}}]
    assert figures.fmt(figures.span(runs, "a"), ".2f", "x") == "1.18x-1.26x"
    assert figures.fmt(figures.span(runs, "b.c"), ".1f") == "2.0-3.0"
    assert figures.fmt(figures.span(runs[1:], "a"), ".1f", "x") == "1.3x"
    assert figures.fmt((1.04, 1.01), ".1f", "x") == "1.0x"
    assert figures.span(runs, "missing") is None
    assert figures.fmt(None, ".1f") == "not measured"


def test_a_new_run_widens_the_range_in_the_readme(results: Path) -> None:
    record_run(results / "cdi.json", "cdi", {
        "files": 100, "devices": 10000, "refresh_over_load_yaml": 0.0003,
        "refresh_over_load_json": 0.002, "inject_over_deepcopy": 2.9, "injected": 8,
        "many_nodes": 20000, "many_over_few": 11.0,
    })  # fmt: skip
    block = figures.benchmarks_block(figures.load_results(results))
    assert "| 2.3x-2.9x |" in block
    assert "| 11.0x-12.7x |" in block
    assert "0.03%-0.08% (YAML)" in block


def test_runs_of_another_size_are_not_mixed_in(results: Path) -> None:
    record_run(results / "scan.json", "scan", {
        "largest": 100, "import_ms": 4.0, "rust_over_floor_cpu": 3.0,
        "rust_over_floor_wall": 3.0, "naive_over_rust": 9.0, "rss_per_function": 5000,
        "lspci_over_rust": {"100": 6.0}, "reference_over_rust": [3.2, 3.2],
    })  # fmt: skip
    block = figures.benchmarks_block(figures.load_results(results))
    assert "full scan, 100 functions" in block
    assert "| 3.00x CPU time, 3.00x wall |" in block  # not 1.18x-3.00x: other sizes stay out
    assert "6.4x at 100" not in block and "6.0x at 100" in block


def test_the_lab_records_what_the_lab_block_renders(results: Path) -> None:
    (results / "lab.json").unlink()
    walls = {"debian": 171.04, "lab": 199.5}
    assert lab_figures({"debian": 171.0}, ("debian", "lab"), None) is None
    record_run(results / "lab.json", "lab", lab_figures(walls, ("debian", "lab"), 402.26) or {})
    text = figures.lab_block(figures.load_results(results))
    assert "(one full run)" in text
    assert "every check in 171 s" in text
    assert "the lab kernel in 200 s" in text
    assert "takes 402 s in all" in text
    assert all(len(line) <= 95 for line in text.splitlines())


def test_the_seed_block_renders_what_the_lab_recorded(results: Path) -> None:
    (results / "lab.json").unlink()
    timing = {"to_devices_s": 80.0, "qemu_start_s": 10.0}
    scenarios = {
        "baseline": {"timing": timing, "plan": {"functions": []}},
        "numa": {
            "timing": {"to_devices_s": 96.0, "qemu_start_s": 24.0},
            "plan": {"functions": [1, 2]},
        },
    }
    guest = {"checks": {"seed_e2e": {"status": "done", "facts": {"scenarios": scenarios}}}}
    walls = lab_figures({"debian": 300.0, "lab": 320.0}, ("debian", "lab"), None) or {}
    record_run(results / "lab.json", "lab", {**walls, **seed_figures([guest])})
    block = figures.seed_block(figures.load_results(results))
    text = " ".join(block.split())
    assert "seeing its 2 passed functions" in text
    assert "took 1.20x the same VM" in text
    assert "pins the guest's memory first: 2.4x)" in text
    assert all(len(line) <= 95 for line in block.splitlines())


def test_the_dra_lab_block_renders_what_the_lab_recorded(results: Path) -> None:
    (results / "lab.json").unlink()
    timings = {
        "prepare": [0.3, 0.4, 0.2], "prepare_writes": [0.12, 0.1, 0.1],
        "unprepare": [0.36], "unprepare_writes": [0.324],
    }  # fmt: skip
    guest = {"checks": {"dra": {"status": "done", "facts": {"timings": timings}}}}
    walls = lab_figures({"debian": 300.0, "lab": 320.0}, ("debian", "lab"), None) or {}
    record_run(results / "lab.json", "lab", {**walls, **dra_figures([guest])})
    block = figures.dra_lab_block(figures.load_results(results))
    text = " ".join(block.split())
    assert "group took 300 ms (median of five, 40% of it in the sysfs writes" in text
    assert "unpreparing it 360 ms (90% in the writes)" in text
    assert all(len(line) <= 95 for line in block.splitlines())
