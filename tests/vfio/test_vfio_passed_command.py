"""A planned command line rewritten to hand QEMU its VFIO cdevs and /dev/iommu as fds."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest

from kata_vfio import binding
from kata_vfio.errors import NotAssignableError
from kata_vfio.qemu.argv import QemuCommand, QemuOpts
from kata_vfio.qemu.fds import PassedDevice, QemuFds, pass_cdevs, with_passed_fds
from kata_vfio.testing import FakeHost


def _vfio(qemu_id: str, host: str, iommufd: str | None) -> tuple[str, QemuOpts]:
    return (
        "-device",
        QemuOpts.of("vfio-pci", ("host", host), ("id", qemu_id), ("iommufd", iommufd)),
    )


def _command(*devices: tuple[str, QemuOpts], objects: tuple[str, ...] = ()) -> QemuCommand:
    options: list[tuple[str, QemuOpts | str | None]] = [("-machine", "q35")]
    options += [("-object", QemuOpts.of("iommufd", ("id", name))) for name in objects]
    options += list(devices)
    return QemuCommand("qemu-system-x86_64", tuple(options))


def _closed(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def test_with_passed_fds_swaps_paths_for_fds_only_where_passed() -> None:
    command = _command(
        _vfio("gpu", "0000:01:00.0", "iommufd-g1"),
        _vfio("audio", "0000:01:00.1", "iommufd-g1"),
        _vfio("legacy", "0000:02:00.0", None),
        _vfio("other", "0000:03:00.0", "iommufd-g3"),
        objects=("iommufd-g1", "iommufd-g3"),
    )
    fds = QemuFds(
        7,
        (PassedDevice("0000:01:00.0", 8, "x0"), PassedDevice("0000:01:00.1", 9, "x1")),
        "iommufd-g1",
    )
    argv = with_passed_fds(command, fds).argv()
    assert argv[1:] == [
        "-machine", "q35",
        "-object", "iommufd,id=iommufd-g1,fd=7",
        "-object", "iommufd,id=iommufd-g3",
        "-device", "vfio-pci,id=gpu,iommufd=iommufd-g1,fd=8",
        "-device", "vfio-pci,id=audio,iommufd=iommufd-g1,fd=9",
        "-device", "vfio-pci,host=0000:02:00.0,id=legacy",
        "-device", "vfio-pci,host=0000:03:00.0,id=other,iommufd=iommufd-g3",
    ]  # fmt: skip


def test_pass_cdevs_opens_one_iommufd_per_object_and_leaves_groups_to_qemu(
    lab_host: FakeHost, bind_opts: dict[str, Any]
) -> None:
    binding.bind("0000:05:00.0", **bind_opts)  # both functions of group 12
    binding.bind("0000:01:00.0", **bind_opts)
    command = _command(
        _vfio("f0", "0000:05:00.0", "iommufd-g12"),
        _vfio("f1", "0000:05:00.1", "iommufd-g12"),
        _vfio("nic", "0000:01:00.0", None),
        objects=("iommufd-g12",),
    )
    with pass_cdevs(command, paths=lab_host.paths) as passed:
        (fds,) = passed.fds
        targets = [os.readlink(f"/proc/self/fd/{fd}") for fd in passed.pass_fds]
        assert targets == [
            os.path.join(lab_host.dev_root, "iommu"),
            os.path.join(lab_host.dev_root, "vfio/devices/vfio0"),
            os.path.join(lab_host.dev_root, "vfio/devices/vfio1"),
        ]
        devices = [v for f, v in passed.command.options if f == "-device"]
        assert [(d.get("host"), d.get("fd")) for d in devices] == [  # type: ignore[union-attr]
            (None, str(fds.devices[0].fd)),
            (None, str(fds.devices[1].fd)),
            ("0000:01:00.0", None),
        ]
        kept = passed.pass_fds
    assert all(_closed(fd) for fd in kept)
    nothing = _command(_vfio("nic", "0000:01:00.0", None))
    assert pass_cdevs(nothing, paths=lab_host.paths).command == nothing


def test_a_device_that_cannot_be_passed_leaves_nothing_open(
    lab_host: FakeHost, bind_opts: dict[str, Any]
) -> None:
    binding.bind("0000:01:00.0", **bind_opts)
    before = set(os.listdir("/proc/self/fd"))
    command = _command(
        _vfio("nic", "0000:01:00.0", "iommufd-a"),
        _vfio("f0", "0000:05:00.0", "iommufd-b"),  # still on its host driver
        objects=("iommufd-a", "iommufd-b"),
    )
    with pytest.raises(NotAssignableError):
        pass_cdevs(command, paths=lab_host.paths)
    assert set(os.listdir("/proc/self/fd")) == before
