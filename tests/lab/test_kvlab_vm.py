"""The lab VM's command line and the guest command file, checked without booting a kernel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kvlab import cache, topology, vm
from kvlab.ci import lab_unavailable
from kvlab.errors import LabError
from kvlab.kernels import Kernel

_MODULAR = Kernel("debian", Path("/k/vmlinuz-6.12"), "6.12", Path("/k"))
_BUILTIN = Kernel("lab", Path("/k/bzImage"), "6.12-kvlab", None)


def _config(kernel: Kernel = _MODULAR, out: str = "/var/tmp/out") -> vm.VmConfig:
    return vm.VmConfig(kernel=kernel, initrd=Path("/k/initrd.cpio.gz"), out_dir=Path(out))


def _devices(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv) if word == "-device"]


def test_the_viommu_comes_before_every_pci_device() -> None:
    devices = _devices(vm.qemu_argv(_config()))
    assert devices[0].startswith("intel-iommu,intremap=on,caching-mode=on")
    assert len(devices) == 3 + len(topology.DEVICES)


def test_topology_ids_are_unique_and_every_nic_skips_its_option_rom() -> None:
    ids = [device.id for device in topology.DEVICES]
    assert len(ids) == len(set(ids))
    for device in topology.DEVICES:
        if device.driver in ("e1000e", "e1000"):
            assert ",romfile=" in device.option() or device.option().endswith("romfile=")


def test_expected_groups_cover_every_nic_once() -> None:
    nics = [topology.NIC_SINGLE, topology.NIC_SWITCH, *topology.NIC_MULTI, *topology.NIC_BRIDGED]
    members = [bdf for group in topology.EXPECTED_GROUPS.values() for bdf in group]
    assert sorted(set(members)) == sorted(members)
    assert set(nics) <= set(members)
    for shape, endpoints in topology.EXPECTED_ENDPOINTS.items():
        assert set(endpoints) <= set(topology.EXPECTED_GROUPS[shape])


@pytest.mark.parametrize(("memory", "cpus"), [(2048, 2), (2049, 3), (512, 1)])
def test_numa_nodes_share_all_memory_and_cpus(memory: int, cpus: int) -> None:
    options = vm.numa_options(vm.VmConfig(_MODULAR, Path("/i"), Path("/o"), memory, cpus))
    objects = [options[i + 1] for i, word in enumerate(options) if word == "-object"]
    nodes = [options[i + 1] for i, word in enumerate(options) if word == "-numa"]
    assert len(nodes) == topology.NUMA_NODES > topology.NUMA_EXPANDER_NODE
    sizes = [int(o.rsplit("size=", 1)[1].removesuffix("M")) for o in objects]
    assert sum(sizes) == memory and all(size > 0 for size in sizes)
    given: list[int] = []
    for node in nodes:
        cpu_range = dict(f.split("=", 1) for f in node.split(",")[1:]).get("cpus")
        if cpu_range:
            first, _, last = cpu_range.partition("-")
            given += range(int(first), int(last or first) + 1)
    assert given == list(range(cpus))
    assert "cpus=" in nodes[0] and not any("cpus=" in node for node in nodes[1:])


def test_cmdline_mounts_modules_only_for_a_modular_kernel() -> None:
    modular = vm.kernel_cmdline(_config(_MODULAR))
    builtin = vm.kernel_cmdline(_config(_BUILTIN))
    assert "kvlab.moddir=/k/lib/modules/6.12" in modular.split()
    assert "kvlab.coldplug=0" not in modular.split()
    assert "kvlab.coldplug=0" in builtin.split()
    assert not any(word.startswith("kvlab.moddir") for word in builtin.split())
    assert {"intel_iommu=on", "iommu.strict=1", "kvlab.out=/var/tmp/out"} <= set(modular.split())


@pytest.mark.parametrize(
    "bad", ["relative/out", "/tmp/a,b", "/tmp/a b", "/tmp/../etc", "/tmp/x\nlab", "/tmp/é"]
)
def test_paths_qemu_or_the_kernel_would_split_are_refused(bad: str) -> None:
    with pytest.raises(LabError, match="cannot be passed to the lab VM"):
        vm.qemu_argv(_config(out=bad))


def test_command_script_passes_argv_and_env_exactly(tmp_path: Path) -> None:
    probe = (
        "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ['ODD'], os.getcwd()]))"
    )
    argv = [sys.executable, "-c", probe, "a b", "it's", "$HOME", ";false", ""]
    env = {"ODD": "x'y\"z $PATH", "PATH": os.environ["PATH"]}
    script = tmp_path / "command.sh"
    script.write_text(vm.command_script(argv, tmp_path, env))
    done = subprocess.run(["/bin/sh", str(script)], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == [argv[3:], env["ODD"], str(tmp_path)]


def test_guest_environment_keeps_this_path_and_marks_the_guest(tmp_path: Path) -> None:
    env = vm.guest_environment({"EXTRA": "1"}, tmp_path)
    assert env["PATH"] == os.environ["PATH"]
    assert env["KVLAB_GUEST"] == "1"
    assert env["KVLAB_OUT"] == str(tmp_path)
    assert env["EXTRA"] == "1"


def test_cache_keys_keep_part_boundaries() -> None:
    assert cache.digest(["ab", "c"]) != cache.digest(["a", "bc"])
    assert cache.digest(["x"]) == cache.digest([b"x"])
    assert len(cache.digest([])) == 12


def test_cache_refuses_a_directory_others_can_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(cache.ENV_VAR, str(shared))
    with pytest.raises(LabError, match="only it can write"):
        cache.cache_root()
    shared.chmod(0o700)
    assert cache.cache_root() == shared


def test_write_atomic_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "image"
    cache.write_atomic(target, b"one", mode=0o600)
    cache.write_atomic(target, b"two", mode=0o600)
    assert target.read_bytes() == b"two"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["image"]


@pytest.mark.qemu
def test_real_qemu_builds_the_lab_topology(tmp_path: Path) -> None:
    """QEMU accepts the lab's devices and puts each of the right type on the right bus.

    The machine stays paused before firmware (no kernel), so QOM, not query-pci, is asked:
    bus numbers do not exist until firmware assigns them.
    """
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        lab_unavailable(
            "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)", os.environ
        )
    argv = vm.qemu_argv(_config(out=str(tmp_path)))
    for option in ("-kernel", "-initrd", "-append", "-serial"):
        at = argv.index(option)
        del argv[at : at + 2]
    argv[0] = qemu
    commands: list[dict[str, object]] = [
        {"execute": "qmp_capabilities"},
        {"execute": "qom-list", "arguments": {"path": "/machine/peripheral"}},
    ]
    commands += [
        {
            "execute": "qom-get",
            "arguments": {"path": f"/machine/peripheral/{d.id}", "property": "parent_bus"},
        }
        for d in topology.DEVICES
    ]
    commands.append({"execute": "quit"})
    done = subprocess.run(
        [*argv, "-S", "-qmp", "stdio"],
        input="".join(json.dumps(c) + "\n" for c in commands),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    replies = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    answers = [r["return"] for r in replies if "return" in r]
    assert len(answers) == len(commands), f"QEMU refused a command: {replies} {done.stderr}"
    types = {child["name"]: child["type"] for child in answers[1]}
    for device, parent_bus in zip(topology.DEVICES, answers[2:-1], strict=True):
        assert types.get(device.id) == f"child<{device.driver}>", device
        assert parent_bus.endswith(f"/{device.bus}"), (device, parent_bus)


def test_a_missing_tool_is_unavailable_and_names_its_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kvlab import proc
    from kvlab.errors import LabUnavailableError

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LabUnavailableError, match="qemu-system-x86_64 is not installed") as info:
        proc.require_tool("qemu-system-x86_64")
    assert info.value.hint == "install the Debian package qemu-system-x86"


@pytest.mark.skipif(shutil.which("apt-cache") is None, reason="not a Debian system (no apt-cache)")
def test_an_unknown_package_is_unavailable_with_the_sources_hint() -> None:
    from kvlab import apt
    from kvlab.errors import LabUnavailableError

    with pytest.raises(LabUnavailableError, match="apt knows no package") as info:
        apt.candidate_version("linux-source-0.0-kvlab-none")
    assert "bookworm-security" in (info.value.hint or "")
    with pytest.raises(LabUnavailableError, match="matching"):
        apt.newest_name(r"linux-image-9\.99\.([0-9]+)\+kvlab-none")
