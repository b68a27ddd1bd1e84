"""Devices the host is using are refused unless forced: mounted filesystems and swap on
block devices under them (also through device-mapper), network interfaces that are up with
an address or route, the boot VGA device and the framebuffer console; and functions the
platform needs (LPC/ISA bridge, SMBus, ...), whatever uses them."""

from __future__ import annotations

import os
from typing import Any

import pytest
from host_usage import NIC, add_block, add_netdev, mount, put

from kata_vfio import binding
from kata_vfio.errors import BindError
from kata_vfio.testing import FakeHost
from kata_vfio.testing.kernel_sim import KernelSim


def refusal(opts: dict[str, Any], bdf: str = NIC) -> str:
    with pytest.raises(BindError, match="refusing to take devices the host is using") as info:
        binding.bind(bdf, **opts)
    # The core names the step as data; binding words it for the CLI and the API alike.
    assert info.value.remedies == ("force",)
    assert info.value.hint is not None and "--force (force=True)" in info.value.hint
    return str(info.value)


def test_a_free_device_binds(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    add_netdev(lab_host, "eth0", up=False)
    put(os.path.join(lab_host.proc_root, "net/route"), "Iface\tDestination\n")
    assert binding.bind(NIC, **bind_opts).devices[0].action == "bound"


def test_an_interface_with_a_route_is_refused_until_forced(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    add_netdev(lab_host, "eth0", up=True)
    put(
        os.path.join(lab_host.proc_root, "net/route"),
        "Iface\tDestination\tGateway\tFlags\neth0\t0002A8C0\t00000000\t0001\n",
    )
    message = refusal(bind_opts)
    assert f"{NIC}: network interface eth0 is up with an IPv4 route" in message
    assert sim.log == [], "nothing was written"
    forced = binding.bind(NIC, force=True, **bind_opts)
    assert forced.devices[0].driver_after == "vfio-pci"


def test_ipv6_global_addresses_count_link_local_ones_do_not(
    lab_host: FakeHost, bind_opts: dict[str, Any]
) -> None:
    add_netdev(lab_host, "eth0", up=True)
    inet6 = os.path.join(lab_host.proc_root, "net/if_inet6")
    put(inet6, "fe80000000000000025056fffe8a1b2c 02 40 20 80     eth0\n")
    assert binding.bind(NIC, dry_run=True, **bind_opts).devices[0].action == "bound"
    put(inet6, "20010db8000000000000000000000001 02 40 00 80     eth0\n")
    assert "IPv6 address" in refusal(bind_opts)


def test_a_mounted_partition_is_refused(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    bdf = "0000:04:00.0"
    add_block(lab_host, bdf, "nvme0n1", "259:0")
    add_block(lab_host, bdf, "nvme0n1p1", "259:1", under="nvme0n1")
    mount(lab_host, "259:1", "/boot\\040efi")
    message = refusal(bind_opts, bdf)
    assert "block device nvme0n1p1 is mounted at /boot efi" in message


def test_lvm_on_the_disk_counts_through_its_holders(
    lab_host: FakeHost, bind_opts: dict[str, Any]
) -> None:
    bdf = "0000:04:00.0"
    disk = add_block(lab_host, bdf, "nvme0n1", "259:0")
    dm = add_block(lab_host, "", "dm-0", "253:0")
    holders = os.path.join(disk, "holders")
    os.makedirs(holders)
    os.symlink(os.path.relpath(dm, holders), os.path.join(holders, "dm-0"))
    mount(lab_host, "253:0", "/")
    assert "block device dm-0 is mounted at /" in refusal(bind_opts, bdf)


def test_swap_on_the_disk_is_refused(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    bdf = "0000:04:00.0"
    add_block(lab_host, bdf, "nvme0n1", "259:0")
    add_block(lab_host, bdf, "nvme0n1p3", "259:3", under="nvme0n1")
    put(
        os.path.join(lab_host.proc_root, "swaps"),
        "Filename\tType\tSize\tUsed\tPriority\n/dev/nvme0n1p3 partition 8388604 0 -2\n",
    )
    assert "block device nvme0n1p3 is in use as swap" in refusal(bind_opts, bdf)


def test_an_unmounted_disk_binds(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    bdf = "0000:04:00.0"
    add_block(lab_host, bdf, "nvme0n1", "259:0")
    mount(lab_host, "8:1", "/")  # another disk
    assert binding.bind(bdf, **bind_opts).devices[0].driver_after == "vfio-pci"


def test_the_boot_vga_device_is_refused(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    put(os.path.join(lab_host.device_path("0000:81:00.0"), "boot_vga"), "1\n")
    message = refusal(bind_opts, "0000:81:00.1")  # its group takes the GPU along
    assert "0000:81:00.0: it is the boot VGA device" in message


def test_the_framebuffer_console_is_refused(lab_host: FakeHost, bind_opts: dict[str, Any]) -> None:
    gpu = "0000:81:00.0"
    put(os.path.join(lab_host.device_path(gpu), "boot_vga"), "0\n")
    os.makedirs(os.path.join(lab_host.device_path(gpu), "graphics/fb0"))
    vtcon = os.path.join(lab_host.sysfs_root, "class/vtconsole/vtcon1")
    put(os.path.join(vtcon, "name"), "(M) frame buffer device\n")
    put(os.path.join(vtcon, "bind"), "0\n")
    assert binding.bind(gpu, dry_run=True, **bind_opts).devices[0].action == "bound"
    put(os.path.join(vtcon, "bind"), "1\n")
    assert "it drives the framebuffer console (fb0)" in refusal(bind_opts, gpu)


def test_a_device_already_on_vfio_is_not_checked_again(
    lab_host: FakeHost, bind_opts: dict[str, Any]
) -> None:
    binding.bind(NIC, **bind_opts)
    add_netdev(lab_host, "eth0", up=True)
    put(os.path.join(lab_host.proc_root, "net/route"), "Iface\teth0\neth0\t0\n")
    assert binding.bind(NIC, **bind_opts).devices[0].action == "already-bound"


def test_platform_functions_are_refused_until_forced(
    lab_host: FakeHost, sim: KernelSim, bind_opts: dict[str, Any]
) -> None:
    # The q35 ICH9 group: LPC bridge (lpc_ich), AHCI, SMBus (i801_smbus).
    message = refusal(bind_opts, "0000:00:1f.2")
    assert "0000:00:1f.0: it is an ISA/LPC bridge" in message
    assert "0000:00:1f.3: it is an SMBus controller" in message
    assert sim.state()["0000:00:1f.0"][0] == "lpc_ich"  # nothing was written
    report = binding.bind("0000:00:1f.2", **bind_opts, force=True)
    assert {str(d.bdf) for d in report.devices} == {"0000:00:1f.0", "0000:00:1f.2", "0000:00:1f.3"}
    assert sim.state()["0000:00:1f.0"][0] == "vfio-pci"
