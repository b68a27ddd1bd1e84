"""Entry point of the lab guest: run one suite of checks, write their facts as JSON.

Run by tests/lab/conftest.py inside the guest with the host's own interpreter. Every check
records facts (not verdicts); the host-side tests turn them into assertions. Results are
rewritten after each check, so a guest that dies mid-suite still reports what it saw.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path[:0] = [str(HERE), str(REPO / "tools" / "lab")]

import kernel_facts  # noqa: E402 (needs the path above)

# The check modules, in the order they run (each leaves the devices as it found them). Every
# kernel runs them all; what a kernel lacks (iommufd on Debian's) the checks read from /dev.
CHECKS = (
    "check_bind",
    "check_scan",
    "check_vfio",
    "check_dma",
    "check_refusals",
    "check_k8s",
    "check_dra",
    "check_nested",
    "check_seed_e2e",
)


def _write_results(out: Path, results: dict[str, Any]) -> None:
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    os.replace(tmp, out / "results.json")


def main() -> int:
    """Run the suite named on the command line; exit 0 even when checks fail (facts matter)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--suite", required=True, help="which kernel this is (for the results)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", action="append", help="run just this check (by hand)")
    args = parser.parse_args()
    context = json.loads((args.out / "context.json").read_text())
    results: dict[str, Any] = {
        "suite": args.suite,
        "release": os.uname().release,
        "python": sys.executable,
        "uptime_at_start": float(Path("/proc/uptime").read_text().split()[0]),
        "checks": {},
    }
    for module_name in CHECKS:
        if args.only and module_name.removeprefix("check_") not in args.only:
            continue
        started = time.monotonic()
        entry: dict[str, Any]
        name = module_name.removeprefix("check_")
        before = kernel_facts.endpoint_states()
        try:
            module = importlib.import_module(module_name)
            entry = {"status": "done", "facts": module.run(context)}
        except Exception:
            entry = {"status": "error", "error": traceback.format_exc()}
        entry["seconds"] = round(time.monotonic() - started, 2)
        # Each check must leave the devices as it found them; if not, say so and reset them
        # so the next check starts clean.
        entry["devices_before"] = before
        entry["devices_after"] = kernel_facts.endpoint_states()
        if entry["devices_after"] != before:
            kernel_facts.reset_endpoints(before)
        print(f"KVLAB-CHECK {name} {entry['status']} {entry['seconds']}s", flush=True)
        results["checks"][name] = entry
        _write_results(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
