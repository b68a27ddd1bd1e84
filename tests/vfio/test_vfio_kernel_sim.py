"""The binding simulator answers as the kernel does (the behaviour lab.md measured on 6.12),
so the binding tests that run on it mean something."""

from __future__ import annotations

import errno
import os

import pytest

from kata_vfio._core import scan
from kata_vfio.testing import FakeHost
from kata_vfio.testing.kernel_sim import KernelSim


def dev_file(host: FakeHost, bdf: str, name: str) -> str:
    return os.path.join(host.sysfs_root, "bus/pci/devices", bdf, name)


def bus_file(host: FakeHost, *parts: str) -> str:
    return os.path.join(host.sysfs_root, "bus/pci", *parts)


def write(sim: KernelSim, path: str, text: str) -> None:
    sim.write(path, text.encode())


def write_errno(sim: KernelSim, path: str, text: str) -> int | None:
    """The errno of a write the kernel must refuse (the test fails if it is accepted)."""
    try:
        write(sim, path, text)
    except OSError as exc:
        return exc.errno
    pytest.fail(f"writing {text!r} to {path} should have failed")


def group_viable(host: FakeHost, group: int) -> bool:
    return scan(host.sysfs_root, host.dev_root, host.proc_root).group(group).viable


def test_override_alone_changes_nothing(lab_host: FakeHost, sim: KernelSim) -> None:
    write(sim, dev_file(lab_host, "0000:01:00.0", "driver_override"), "vfio-pci")
    assert sim.state()["0000:01:00.0"] == ("e1000e", "vfio-pci")


def test_unbind_then_probe_honours_the_override(lab_host: FakeHost, sim: KernelSim) -> None:
    bdf = "0000:01:00.0"
    write(sim, dev_file(lab_host, bdf, "driver_override"), "vfio-pci")
    write(sim, bus_file(lab_host, "drivers/e1000e/unbind"), bdf)
    assert sim.state()[bdf] == (None, "vfio-pci")
    write(sim, bus_file(lab_host, "drivers_probe"), bdf + "\n")
    assert sim.state()[bdf] == ("vfio-pci", "vfio-pci")
    assert os.path.exists(os.path.join(lab_host.dev_root, "vfio/9")), "group node appears"


def test_clearing_the_override_and_reprobing_returns_the_host_driver(
    lab_host: FakeHost, sim: KernelSim
) -> None:
    bdf = "0000:01:00.0"
    write(sim, dev_file(lab_host, bdf, "driver_override"), "vfio-pci")
    write(sim, bus_file(lab_host, "drivers/e1000e/unbind"), bdf)
    write(sim, bus_file(lab_host, "drivers_probe"), bdf)
    write(sim, dev_file(lab_host, bdf, "driver_override"), "\n")
    write(sim, bus_file(lab_host, "drivers/vfio-pci/unbind"), bdf)
    write(sim, bus_file(lab_host, "drivers_probe"), bdf)
    assert sim.state()[bdf] == ("e1000e", None)
    assert not os.path.exists(os.path.join(lab_host.dev_root, "vfio/9")), "group node goes"


@pytest.mark.parametrize(
    ("driver", "bdf"),
    [("e1000e", "0000:00:10.0"), ("e1000", "0000:01:00.0"), ("vfio-pci", "0000:01:00.0")],
)
def test_unbind_from_another_driver_is_enodev(
    lab_host: FakeHost, sim: KernelSim, driver: str, bdf: str
) -> None:
    with pytest.raises(OSError, match="not bound") as info:
        write(sim, bus_file(lab_host, "drivers", driver, "unbind"), bdf)
    assert info.value.errno == errno.ENODEV


def test_unbind_of_an_unbound_device_is_enodev(lab_host: FakeHost, sim: KernelSim) -> None:
    bdf = "0000:05:00.0"
    write(sim, bus_file(lab_host, "drivers/e1000e/unbind"), bdf)
    assert write_errno(sim, bus_file(lab_host, "drivers/e1000e/unbind"), bdf) == errno.ENODEV


def test_bind_file_rules(lab_host: FakeHost, sim: KernelSim) -> None:
    bdf = "0000:05:00.0"
    assert write_errno(sim, bus_file(lab_host, "drivers/e1000e/bind"), bdf) == errno.EBUSY
    write(sim, bus_file(lab_host, "drivers/e1000e/unbind"), bdf)
    # vfio-pci has no ID table of its own: without an override it matches nothing.
    assert write_errno(sim, bus_file(lab_host, "drivers/vfio-pci/bind"), bdf) == errno.ENODEV
    write(sim, dev_file(lab_host, bdf, "driver_override"), "vfio-pci")
    # An override naming another driver never matches, even the device's own driver.
    assert write_errno(sim, bus_file(lab_host, "drivers/e1000e/bind"), bdf) == errno.ENODEV
    write(sim, bus_file(lab_host, "drivers/vfio-pci/bind"), bdf)
    assert sim.state()[bdf] == ("vfio-pci", "vfio-pci")


def test_probe_of_an_unknown_device_is_enodev(lab_host: FakeHost, sim: KernelSim) -> None:
    for name in ("0000:09:00.0", "../0000:01:00.0", ""):
        assert write_errno(sim, bus_file(lab_host, "drivers_probe"), name) == errno.ENODEV


def test_vfio_pci_probe_refuses_bridges(lab_host: FakeHost, sim: KernelSim) -> None:
    bdf = "0000:03:00.0"  # a switch downstream port
    write(sim, dev_file(lab_host, bdf, "driver_override"), "vfio-pci")
    write(sim, bus_file(lab_host, "drivers/pcieport/unbind"), bdf)
    write(sim, bus_file(lab_host, "drivers_probe"), bdf)  # succeeds, binds nothing
    assert sim.state()[bdf] == (None, "vfio-pci")


def test_probe_with_an_override_for_a_missing_driver_binds_nothing(
    lab_host: FakeHost, sim: KernelSim
) -> None:
    bdf = "0000:01:00.0"
    write(sim, dev_file(lab_host, bdf, "driver_override"), "mlx5_vfio_pci")
    write(sim, bus_file(lab_host, "drivers/e1000e/unbind"), bdf)
    write(sim, bus_file(lab_host, "drivers_probe"), bdf)
    assert sim.state()[bdf] == (None, "mlx5_vfio_pci")


def test_override_text_rules(lab_host: FakeHost, sim: KernelSim) -> None:
    path = dev_file(lab_host, "0000:01:00.0", "driver_override")
    write(sim, path, "vfio-pci\ntrailing")
    assert sim.state()["0000:01:00.0"][1] == "vfio-pci"
    write(sim, path, "")
    assert sim.state()["0000:01:00.0"][1] is None
    assert write_errno(sim, path, "x" * 4095) == errno.EINVAL


def test_viability_follows_the_bindings_like_the_lab(lab_host: FakeHost, sim: KernelSim) -> None:
    # lab.md: group 12 with only 05:00.0 on vfio-pci is not viable; with both it is.
    def to_vfio(bdf: str) -> None:
        write(sim, dev_file(lab_host, bdf, "driver_override"), "vfio-pci")
        write(sim, bus_file(lab_host, "drivers/e1000e/unbind"), bdf)
        write(sim, bus_file(lab_host, "drivers_probe"), bdf)

    to_vfio("0000:05:00.0")
    assert not group_viable(lab_host, 12)
    to_vfio("0000:05:00.1")
    assert group_viable(lab_host, 12)


def test_injected_faults_fire_then_stop(lab_host: FakeHost, sim: KernelSim) -> None:
    path = dev_file(lab_host, "0000:01:00.0", "driver_override")
    sim.fail_next("driver_override", errno.EBUSY, times=2)
    for _ in range(2):
        assert write_errno(sim, path, "vfio-pci") == errno.EBUSY
    write(sim, path, "vfio-pci")
    assert len(sim.log) == 3


def test_modules_register_their_driver(tmp_path: object, lab_host: FakeHost) -> None:
    sim = KernelSim.for_host(lab_host, modules={"nvgrace_gpu_vfio_pci": "nvgrace_gpu_vfio_pci"})
    sim.load_module("nvgrace_gpu_vfio_pci")
    assert os.path.isdir(bus_file(lab_host, "drivers/nvgrace_gpu_vfio_pci"))
    with pytest.raises(RuntimeError, match="not found"):
        sim.load_module("no_such_module")


def test_files_that_are_not_binding_files_are_refused(lab_host: FakeHost, sim: KernelSim) -> None:
    assert write_errno(sim, dev_file(lab_host, "0000:01:00.0", "enable"), "1") == errno.EACCES
    assert (
        write_errno(sim, bus_file(lab_host, "drivers/nonexistent/unbind"), "0000:01:00.0")
        == errno.ENOENT
    )
