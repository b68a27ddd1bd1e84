"""``unbind`` and ``restore`` against the real kernel when the host or a VM still uses the
device: they must refuse, quickly and naming why, instead of blocking in the kernel or
taking a device the host needs; and act once the user is gone.

- A process holds the bound NIC's group the way QEMU does (legacy: container, group,
  type1v2) or its cdev bound to an iommufd (lab kernel): the kernel answers ``EBUSY`` to a
  second open of the group, and an unbind would wait for the holder to let go.
- A planted journal entry claims kata-vfio moved the NIC to e1000e from no driver, while the
  NIC is configured (an address and a route): restore must not unbind it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kernel_facts as kf
from kvlab import topology

from kata_vfio import binding

NIC = topology.NIC_SINGLE
# A refusal takes well under a second; a blocked unbind waits for the holder forever.
HANG_S = 120.0
MAGIC = "# kata-vfio binding journal v1: `kata-vfio restore` puts this device back"

_HOLDERS = {
    "group": """
from kata_vfio._core import VfioContainer, VfioGroup
container = VfioContainer.open()
group = VfioGroup.open({group})
group.set_container(container)
container.set_iommu(3)
held = (container, group)
""",
    "cdev": """
from kata_vfio._core import IommuFd, VfioDevice
iommufd = IommuFd.open()
device = VfioDevice.open_cdev({cdev!r})
device.bind_iommufd(iommufd)
held = (iommufd, device)
""",
}


def _state() -> dict[str, str | None]:
    return {"driver": kf.driver_of(NIC), "override": kf.driver_override(NIC)}


def _cli(*args: str) -> dict[str, Any]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kata_vfio", *args],
            capture_output=True,
            text=True,
            timeout=HANG_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"argv": list(args), "hung": True, "seconds": HANG_S}
    return {
        "argv": list(args),
        "hung": False,
        "rc": done.returncode,
        "stdout": done.stdout[-2000:],
        "stderr": done.stderr[-2000:],
        "seconds": round(time.monotonic() - started, 2),
    }


def _hold(mode: str) -> subprocess.Popen[str]:
    """A process holding the NIC as ``mode`` says, until its stdin closes."""
    code = _HOLDERS[mode].format(group=kf.group_of(NIC), cdev=_cdev())
    code += "import sys\nprint('ready', flush=True)\nsys.stdin.read()\n"
    holder = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    line = holder.stdout.readline().strip()
    if line != "ready":
        holder.kill()
        raise RuntimeError(f"the {mode} holder did not start (said {line!r})")
    return holder


def _cdev() -> str | None:
    try:
        return kf.vfio_cdev_of(NIC)
    except (OSError, RuntimeError):
        return None


def _held(mode: str) -> dict[str, Any]:
    """Bind, hold, try unbind and restore, let go, restore."""
    facts: dict[str, Any] = {"before": _state()}
    with tempfile.TemporaryDirectory(prefix="kvlab-journal-") as state_dir:
        binding.bind([NIC], group=True, state_dir=state_dir)
        facts["bound"] = _state()
        holder = _hold(mode)
        facts["holder_pid"] = holder.pid
        try:
            facts["unbind"] = _cli("unbind", NIC, "--state-dir", state_dir)
            facts["restore"] = _cli("restore", "--state-dir", state_dir)
            facts["while_held"] = _state()
            facts["journal_while_held"] = [str(e.bdf) for e in binding.journal(state_dir)]
        finally:
            assert holder.stdin is not None
            holder.stdin.close()
            holder.wait(timeout=60)
        facts["after_release"] = _cli("restore", "--state-dir", state_dir)
        facts["restored"] = _state()
        if binding.journal(state_dir):  # whatever failed above, later checks need the NIC
            binding.restore(state_dir=state_dir, force=True)
    return facts


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _configured_nic() -> dict[str, Any]:
    """A planted entry must not make restore unbind a configured interface."""
    names = sorted(p.name for p in (kf.SYS_PCI / "devices" / NIC / "net").iterdir())
    iface = names[0]
    facts: dict[str, Any] = {"iface": iface, "before": _state()}
    setup = [
        _ip("addr", "add", "192.0.2.10/24", "dev", iface),
        _ip("link", "set", iface, "up"),
    ]
    facts["ip_setup_rc"] = [p.returncode for p in setup]
    facts["ip_setup_stderr"] = [p.stderr[-500:] for p in setup]
    facts["route"] = [
        line.split()[0]
        for line in Path("/proc/net/route").read_text().splitlines()[1:]
        if line.split()
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="kvlab-journal-") as state_dir:
            os.chmod(state_dir, 0o700)
            Path(state_dir, f"{NIC}.journal").write_text(
                f"{MAGIC}\nbdf={NIC}\ngroup={kf.group_of(NIC)}\ndriver=\noverride=\ntarget=e1000e\n"
            )
            facts["restore"] = _cli("restore", "--state-dir", state_dir)
            facts["after"] = _state()
            facts["journal_after"] = [str(e.bdf) for e in binding.journal(state_dir)]
    finally:
        _ip("addr", "flush", "dev", iface)
        _ip("link", "set", iface, "down")
    return facts


def run(context: dict[str, Any]) -> dict[str, Any]:
    """The group held the legacy way everywhere, the cdev way where the kernel has it, and
    the configured interface."""
    del context
    kf.ensure_vfio_pci()
    facts: dict[str, Any] = {"has_iommufd": Path("/dev/iommu").exists()}
    facts["group"] = _held("group")
    if facts["has_iommufd"]:
        facts["cdev"] = _held("cdev")
    facts["configured"] = _configured_nic()
    return facts
