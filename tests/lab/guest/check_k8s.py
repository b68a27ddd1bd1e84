"""The device plugin against the real kernel: health from kernel uevents.

The agent runs as its own process (``kata-vfio k8s device-plugin`` on the real /sys, kernel
uevents over netlink, a rescan interval of an hour so that only a uevent can explain an
update), registered with the fake kubelet from tests/k8s (the official protos). The lone
e1000e is bound to vfio-pci, then given back to e1000e (``restore``), then bound again; each
time the kubelet's ListAndWatch stream is read until the unit's health changes. Facts: the
health seen, the time from the first sysfs write to the stream update, and the agent's log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kvlab import topology

from kata_vfio import binding

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "k8s"))

from fake_kubelet import FakeKubelet  # noqa: E402

RESOURCE = "lab.kata-vfio.io/nic"
DEVICE = topology.NIC_SINGLE
WAIT_S = 60.0


def _health_after(watch: Any, action: Any, want: str) -> dict[str, Any]:
    started = time.monotonic()
    action()
    written = time.monotonic()
    try:
        update = watch.until(lambda d: d.get(DEVICE, ("",))[0] == want, timeout=WAIT_S)
    except Exception as exc:  # queue.Empty: never seen
        return {"seen": None, "error": repr(exc), "write_s": written - started}
    return {
        "seen": update[DEVICE][0],
        "numa": update[DEVICE][1],
        "latency_s": time.monotonic() - started,
        "after_writes_s": time.monotonic() - written,
        "write_s": written - started,
    }


def run(context: dict[str, Any]) -> dict[str, Any]:
    """Start the agent with the NIC on vfio-pci, flip it away and back, stop the agent."""
    del context
    facts: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="kvlab-k8s-") as tmp,
        tempfile.TemporaryDirectory(prefix="kvlab-journal-") as state_dir,
    ):
        plugin_dir = os.path.join(tmp, "device-plugins")
        kubelet = FakeKubelet(plugin_dir).start()
        binding.bind([DEVICE], group=True, state_dir=state_dir)
        agent = subprocess.Popen(
            [sys.executable, "-m", "kata_vfio", "k8s", "device-plugin",
             f"--resource={RESOURCE}=8086:10d3", "--plugin-dir", plugin_dir,
             "--cdi-dir", os.path.join(tmp, "cdi"), "--rescan-interval", "3600"],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            registration = kubelet.wait_registration(WAIT_S)
            facts["registered"] = registration.resource_name
            client = kubelet.plugin(registration.endpoint)
            watch = client.watch()
            first = watch.next(WAIT_S)
            facts["first"] = first.get(DEVICE)
            # The NIC behind the NUMA expander (on e1000e: listed Unhealthy, not dropped).
            facts["numa_nic_first"] = first.get(topology.NIC_NUMA)
            facts["away"] = _health_after(
                watch, lambda: binding.restore(state_dir=state_dir), "Unhealthy"
            )
            facts["driver_away"] = _driver(DEVICE)
            facts["back"] = _health_after(
                watch,
                lambda: binding.bind([DEVICE], group=True, state_dir=state_dir),
                "Healthy",
            )
            facts["driver_back"] = _driver(DEVICE)
            watch.cancel()
            client.close()
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                _, err = agent.communicate(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                agent.kill()
                _, err = agent.communicate()
            kubelet.stop()
            if binding.journal(state_dir):
                binding.restore(state_dir=state_dir)
        facts["agent_rc"] = agent.returncode
        facts["agent_log"] = err.splitlines()[-60:]
        facts["socket_left"] = sorted(os.listdir(plugin_dir))
    return facts


def _driver(bdf: str) -> str | None:
    link = f"/sys/bus/pci/devices/{bdf}/driver"
    return os.path.basename(os.readlink(link)) if os.path.islink(link) else None
