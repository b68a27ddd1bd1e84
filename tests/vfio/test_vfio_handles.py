"""VFIO handles, preflight and fd passing without a VFIO kernel: the nodes of a fake host
are plain files, so opens work and ioctls fail with the kernel's own ENOTTY, which is
enough to check errno/path/hint handling, step reporting, close order and the fds handed
to QEMU. The real ioctl sequences run in the lab (tests/lab)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kata_vfio import HostPaths, binding, vfio
from kata_vfio._core import DmaBuffer, IommuFd, VfioContainer, VfioDevice, VfioGroup
from kata_vfio.errors import (
    BdfError,
    DeviceNotFoundError,
    InvalidInputError,
    NotAssignableError,
    VfioError,
)
from kata_vfio.host import render
from kata_vfio.qemu.fds import open_for_qemu
from kata_vfio.testing import FakeHost

PAGE = os.sysconf("SC_PAGE_SIZE")


def roots(host: FakeHost) -> dict[str, HostPaths]:
    return {"paths": host.paths}


def is_closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def test_a_missing_container_names_the_path_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(VfioError) as info:
        VfioContainer.open(str(tmp_path))
    assert info.value.errno == errno.ENOENT
    assert info.value.path == str(tmp_path / "vfio/vfio")
    assert info.value.hint is not None and "modprobe vfio-pci" in info.value.hint


def test_a_missing_group_node_says_to_bind(tmp_path: Path) -> None:
    with pytest.raises(VfioError) as info:
        VfioGroup.open(12, str(tmp_path))
    assert info.value.errno == errno.ENOENT
    # The core says why and names the step as data; kata_vfio.host.render words it.
    assert info.value.hint is not None and "not bound to vfio-pci" in info.value.hint
    assert info.value.remedies == ("bind-group",)
    worded = render.with_remedies(info.value.hint, info.value.remedies)
    assert worded is not None and "kata-vfio bind --group" in worded
    with pytest.raises(VfioError, match="noiommu-12"):
        VfioGroup.open(12, str(tmp_path), noiommu=True)


def test_a_non_vfio_fd_is_refused_as_a_container() -> None:
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        with pytest.raises(VfioError, match="VFIO_GET_API_VERSION on /dev/null") as info:
            VfioContainer.from_fd(fd, "/dev/null")
        assert info.value.errno == errno.ENOTTY
    finally:
        os.close(fd)


def test_handles_close_once_and_refuse_use_after_close(lab_host: FakeHost) -> None:
    group_node = Path(lab_host.dev_root) / "vfio/9"
    group_node.write_text("")  # a plain file stands in for the node
    with VfioGroup.open(9, lab_host.dev_root) as group:
        fd = group.fileno()
        os.fstat(fd)  # open
        assert group.id == 9 and group.path == str(group_node)
        with pytest.raises(VfioError) as info:
            group.status()
        assert (info.value.errno, info.value.path) == (errno.ENOTTY, str(group_node))
    assert group.closed
    assert is_closed(fd)
    group.close()  # idempotent
    with pytest.raises(ValueError, match="closed VFIO group"):
        group.status()
    assert repr(group) == "VfioGroup(closed)"


def test_detach_fd_hands_over_ownership(lab_host: FakeHost) -> None:
    (Path(lab_host.dev_root) / "vfio/devices/vfio0").write_text("")  # a stand-in node
    device = VfioDevice.open_cdev("vfio0", lab_host.dev_root)
    assert device.name == "vfio0"
    fd = device.detach_fd()
    assert device.closed
    os.fstat(fd)  # still open: the caller owns it now
    os.close(fd)
    with pytest.raises(ValueError, match="closed"):
        device.detach_fd()


def test_cdev_names_are_validated(lab_host: FakeHost) -> None:
    for bad in ("../iommu", "vfio", "vfio1/../0", "vfioX", "noiommu-vfio0"):
        with pytest.raises(InvalidInputError, match="vfio cdev name"):
            VfioDevice.open_cdev(bad, lab_host.dev_root)


def test_iommufd_errors_keep_errno(lab_host: FakeHost) -> None:
    with IommuFd.open(lab_host.dev_root) as iommufd:
        with pytest.raises(VfioError) as info:
            iommufd.ioas_alloc()
        assert info.value.errno == errno.ENOTTY
        assert "IOMMU_IOAS_ALLOC" in str(info.value)


def test_dma_buffers_are_page_sized_and_bounds_checked() -> None:
    buffer = DmaBuffer(2 * PAGE)
    assert len(buffer) == buffer.size == 2 * PAGE
    assert buffer.address % PAGE == 0
    assert buffer.read(0, 8) == bytes(8)
    buffer.write(PAGE - 3, b"kata-vfio")
    assert buffer.read(PAGE - 3, 9) == b"kata-vfio"
    for size in (0, PAGE + 1, 100):
        with pytest.raises(InvalidInputError, match="page size"):
            DmaBuffer(size)
    with pytest.raises(InvalidInputError, match="outside"):
        buffer.read(2 * PAGE - 1, 2)
    with pytest.raises(InvalidInputError, match="outside"):
        buffer.write(2 * PAGE, b"x")


def test_check_open_reports_each_step_until_the_kernel_refuses(
    lab_host: FakeHost, bind_opts: dict[str, Any]
) -> None:
    binding.bind("0000:01:00.0", **bind_opts)
    check = vfio.check_open("0000:01:00.0", **roots(lab_host))
    assert not check.ok
    assert [(s.step, s.ok) for s in check.steps] == [
        ("open group 9", True),
        ("VFIO_GROUP_GET_STATUS", False),
    ]
    assert check.errno == errno.ENOTTY
    assert check.to_dict()["steps"][0]["detail"] == os.path.join(lab_host.dev_root, "vfio/9")


def test_check_open_of_an_unbound_device_says_to_bind(lab_host: FakeHost) -> None:
    check = vfio.check_open("0000:01:00.0", **roots(lab_host))
    assert not check.ok
    assert check.steps[0].step == "open group 9" and not check.steps[0].ok
    assert check.errno == errno.ENOENT
    assert check.hint is not None and "kata-vfio bind" in check.hint


def test_check_open_through_iommufd(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    unbound = vfio.check_open("0000:05:00.0", mode="iommufd", **roots(lab_host))
    assert not unbound.ok and unbound.error is not None and "no vfio cdev" in unbound.error
    binding.bind("0000:05:00.0", **bind_opts)
    check = vfio.check_open("0000:05:00.0", mode="iommufd", **roots(lab_host))
    assert [(s.step, s.ok) for s in check.steps] == [
        ("open iommufd", True),
        ("open cdev vfio0", True),
        ("VFIO_DEVICE_BIND_IOMMUFD", False),
    ]
    assert check.errno == errno.ENOTTY


def test_check_open_refuses_bad_addresses(lab_host: FakeHost) -> None:
    with pytest.raises(BdfError):
        vfio.check_open("01:00.0/..", **roots(lab_host))
    with pytest.raises(DeviceNotFoundError):
        vfio.check_open("0000:09:00.0", **roots(lab_host))
    with pytest.raises(InvalidInputError, match="bridge"):
        vfio.check_open("0000:00:10.0", **roots(lab_host))


def test_names_of_regions_and_irqs() -> None:
    assert [vfio.region_name(i) for i in (0, 5, 6, 7, 8, 9)] == [
        "BAR0", "BAR5", "ROM", "CONFIG", "VGA", "region9",
    ]  # fmt: skip
    assert [vfio.irq_name(i) for i in range(6)] == ["INTX", "MSI", "MSIX", "ERR", "REQ", "irq5"]


# --- fd passing -----------------------------------------------------------------------------


def test_a_half_bound_group_cannot_be_handed_to_qemu(
    lab_host: FakeHost, bind_opts: dict[str, Any]
) -> None:
    binding.bind("0000:05:00.0", group=False, **bind_opts)
    with pytest.raises(NotAssignableError, match="group 12 is not viable") as info:
        open_for_qemu("0000:05:00.0", **roots(lab_host))
    assert info.value.hint is not None
    assert "0000:05:00.1 (e1000e)" in info.value.hint
    assert "fix:" in info.value.hint


def test_fds_and_arguments_for_an_unprivileged_qemu(
    lab_host: FakeHost, bind_opts: dict[str, Any]
) -> None:
    binding.bind("0000:05:00.0", **bind_opts)
    with open_for_qemu(["0000:05:00.1", "0000:05:00.0"], **roots(lab_host)) as fds:
        targets = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds.pass_fds]
        assert targets == [
            os.path.join(lab_host.dev_root, "iommu"),
            os.path.join(lab_host.dev_root, "vfio/devices/vfio0"),
            os.path.join(lab_host.dev_root, "vfio/devices/vfio1"),
        ]
        first, second = fds.devices
        assert (first.bdf, second.bdf) == ("0000:05:00.0", "0000:05:00.1"), "PCI order"
        assert fds.qemu_args() == [
            "-object", f"iommufd,id=iommufd0,fd={fds.iommufd_fd}",
            "-device", f"vfio-pci,id=hostdev0,iommufd=iommufd0,fd={first.fd}",
            "-device", f"vfio-pci,id=hostdev1,iommufd=iommufd0,fd={second.fd}",
        ]  # fmt: skip
        assert fds.device_props("05:00.1").endswith(f"fd={second.fd}")
        kept = fds.pass_fds
    assert all(is_closed(fd) for fd in kept)


def test_fds_travel_over_a_unix_socket(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    binding.bind("0000:01:00.0", **bind_opts)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        fds = open_for_qemu("0000:01:00.0", **roots(lab_host))
        with fds:
            fds.send(ours)
            _msg, received, _flags, _addr = socket.recv_fds(theirs, 64, 8)
            try:
                assert len(received) == len(fds.pass_fds)
                for mine, got in zip(fds.pass_fds, received, strict=True):
                    assert os.path.samestat(os.fstat(mine), os.fstat(got))
            finally:
                for fd in received:
                    os.close(fd)


def test_qemu_ids_are_validated(lab_host: FakeHost) -> None:
    for bad in ("0abc", "a b", "x,y=1", ""):
        with pytest.raises(InvalidInputError, match="QEMU id"):
            open_for_qemu("0000:01:00.0", object_id=bad, paths=lab_host.paths)


@pytest.mark.qemu
def test_real_qemu_takes_the_passed_fds(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    binding.bind("0000:01:00.0", **bind_opts)
    with open_for_qemu("0000:01:00.0", **roots(lab_host)) as fds:
        command = [qemu, "-nodefaults", "-display", "none", "-machine", "q35", "-accel", "tcg"]
        done = subprocess.run(
            [*command, *fds.qemu_args()],
            pass_fds=fds.pass_fds,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    # QEMU parsed both options and issued VFIO_DEVICE_BIND_IOMMUFD on exactly our fds; the
    # stand-in nodes are plain files, so the kernel answers ENOTTY.
    (device,) = fds.devices
    expected = f"error bind device fd={device.fd} to iommufd={fds.iommufd_fd}"
    assert done.returncode != 0
    assert expected in done.stderr, done.stderr
