"""DRA plugin benchmarks (pytest-benchmark): one prepare/unprepare cycle of a claim on a fake
host with the kernel simulator.

    pytest benches/test_dra_bench.py --benchmark-enable

Percentiles, the split between sysfs writes and the rest, the gRPC share and the 500-cycle
endurance run come from ``benches/run_dra_bench.py``. Without ``--benchmark-enable`` (the
project default) each test runs once, as a smoke test.
"""

from __future__ import annotations

import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "k8s"))

from dra_fakes import GPU, PAIR, make_rig  # noqa: E402

from kata_vfio.k8s.dra.prepare import Deadline  # noqa: E402


def test_prepare_unprepare_cycle_two_units(benchmark: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="kv-dra-bench-") as tmp:
        rig = make_rig(Path(tmp))
        before = rig.sim.state()
        preparer = rig.preparer()

        def cycle() -> str:
            claim = rig.claims.add(str(uuid.uuid4()), PAIR, GPU)
            result = preparer.prepare(claim, Deadline(30))
            done = preparer.unprepare(claim, Deadline(30))
            return result.error or done.error or result.units[0].cdi_id

        last = benchmark(cycle)
        assert "=" in last, last
        assert rig.sim.state() == before
        assert not any(rig.cdi_dir.iterdir())
