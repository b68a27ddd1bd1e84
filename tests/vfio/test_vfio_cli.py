"""``kata-vfio bind | unbind | restore | info | memlock`` through the real entry point; the
kernel behind the fake tree is the simulator, put in place of the sysfs writer."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from host_usage import hold_open

from kata_vfio import binding
from kata_vfio.cli import main
from kata_vfio.testing import FakeHost
from kata_vfio.testing.kernel_sim import KernelSim


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch, lab_host: FakeHost, sim: KernelSim) -> KernelSim:
    """Routes the CLI's binding writes through the simulator (the CLI itself has no hook)."""
    for name in ("bind", "unbind", "restore"):
        original = getattr(binding, name)
        monkeypatch.setattr(binding, name, functools.partial(original, sysfs_writer=sim.write))
    return sim


def run(host: FakeHost, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--sysfs-root", host.sysfs_root, "--dev-root", host.dev_root, *args])
    out, err = capsys.readouterr()
    return code, out, err


def state_dir(host: FakeHost) -> str:
    """Where the CLI keeps the journal for a fake tree: beside its sysfs root."""
    return os.path.join(host.root, "run/kata-vfio")


def test_dry_run_prints_the_exact_writes_and_changes_nothing(
    lab_host: FakeHost, kernel: KernelSim, capsys: pytest.CaptureFixture[str]
) -> None:
    before = kernel.state()
    code, out, _ = run(lab_host, capsys, "bind", "--dry-run", "0000:05:00.1")
    assert code == 0
    sys_pci = f"{lab_host.sysfs_root}/bus/pci"
    assert f"  echo -n vfio-pci > {sys_pci}/devices/0000:05:00.0/driver_override\n" in out
    assert f"  echo -n 0000:05:00.1 > {sys_pci}/drivers_probe\n" in out
    assert "would be bound" in out
    assert "group 12 has 2 endpoints" in out
    assert kernel.state() == before and kernel.log == []


def test_bind_then_restore(
    lab_host: FakeHost, kernel: KernelSim, capsys: pytest.CaptureFixture[str]
) -> None:
    before = kernel.state()
    code, out, _ = run(lab_host, capsys, "bind", "0000:81:00.0")
    assert code == 0
    assert f"6 sysfs writes; journal: {state_dir(lab_host)}" in out
    code, out, _ = run(lab_host, capsys, "restore", "--list", "--json")
    listed = json.loads(out)
    assert [e["bdf"] for e in listed["entries"]] == ["0000:81:00.0", "0000:81:00.1"]
    assert listed["entries"][0]["driver"] == "nvidia"
    code, out, _ = run(lab_host, capsys, "restore")
    assert code == 0 and "restored" in out
    assert kernel.state() == before
    code, out, _ = run(lab_host, capsys, "restore")
    assert "nothing to restore" in out


def test_bind_json(
    lab_host: FakeHost, kernel: KernelSim, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(lab_host, capsys, "bind", "--json", "0000:01:00.0")
    document = json.loads(out)
    assert code == 0
    assert document["state_dir"] == state_dir(lab_host)
    assert document["devices"][0]["driver_after"] == "vfio-pci"
    assert out == json.dumps(document, indent=2, sort_keys=True) + "\n", "stable JSON"


def test_unbind_returns_the_group(
    lab_host: FakeHost, kernel: KernelSim, capsys: pytest.CaptureFixture[str]
) -> None:
    before = kernel.state()
    run(lab_host, capsys, "bind", "--only", "0000:05:00.0")
    code, out, _ = run(lab_host, capsys, "unbind", "--only", "0000:05:00.0")
    assert code == 0
    assert "restored" in out
    assert kernel.state() == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["bind", "0000:00:10.0"], 2, "bridges are never bound"),
        (["bind", "0000:09:00.0"], 2, "0000:09:00.0 not found"),
        (["bind", "01:00.0/.."], 2, "invalid PCI address"),
        (["bind", "--driver", "../x", "0000:01:00.0"], 2, "invalid driver name"),
        (["bind", "--group", "--only", "0000:01:00.0"], 2, "not allowed with argument"),
        (["bind", "--dry-run", "99999999999999999999"], 2, "is out of range"),
        (["unbind", "4294967296"], 2, "out of range"),
    ],
)
def test_errors_exit_with_a_message_and_a_hint(
    lab_host: FakeHost,
    kernel: KernelSim,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    message: str,
) -> None:
    got, _, err = run(lab_host, capsys, *args)
    assert got == code
    assert message in err
    assert "Traceback" not in err
    assert kernel.log == []


def test_the_sample_host_is_read_only(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["bind", "0000:01:00.0"], ["restore"], ["info", "0000:01:00.0"]):
        assert main(["--sample", *command]) == 2
        _, err = capsys.readouterr()
        assert "sample host" in err


def test_the_sample_host_shows_plans(capsys: pytest.CaptureFixture[str]) -> None:
    from kata_vfio import scan
    from kata_vfio.samples import sample_host

    sample = sample_host()
    host = scan(sample.sysfs_root, sample.dev_root, sample.proc_root)
    blocked = next(
        g
        for g in host.groups
        if not g.viable and len(g.endpoints) > 1 and g.blockers[0].fix.action == "bind-group"
    )
    before = {str(d.bdf): d.driver for d in host.devices}
    assert main(["--sample", "bind", "--dry-run", "--json", str(blocked.id)]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dry_run"] is True
    assert [d["bdf"] for d in plan["devices"]] == [str(b) for b in blocked.endpoints]
    assert all(d["driver_after"] == "vfio-pci" for d in plan["devices"])
    after = scan(sample.sysfs_root, sample.dev_root, sample.proc_root)
    assert {str(d.bdf): d.driver for d in after.devices} == before, "nothing changed"
    assert main(["--sample", "restore", "--list"]) == 0
    assert "nothing to restore" in capsys.readouterr().out


def test_the_sample_hosts_pch_group_is_never_offered_nor_bound(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from kata_vfio import scan
    from kata_vfio.samples import sample_host

    sample = sample_host()
    host = scan(sample.sysfs_root, sample.dev_root, sample.proc_root)
    pch = host.group_of("0000:00:1f.4")  # the SMBus, with the LPC bridge in its group
    assert pch is not None and not pch.assignable
    assert {b.fix.action for b in pch.blockers} == {"none"}
    assert main(["--sample", "groups"]) in (0, 1)
    out = capsys.readouterr().out
    section = out[out.index(f"group {pch.id}:") :].split("\ngroup ")[0]
    assert "kata-vfio bind" not in section.replace("kata-vfio bind refuses", "")
    assert "ISA/LPC bridge" in section
    assert main(["--sample", "bind", "--dry-run", "0000:00:1f.4"]) == 1
    err = capsys.readouterr().err
    assert "SMBus controller" in err and "--force" in err


def test_info_on_a_tree_without_vfio_nodes_fails_with_a_hint(
    lab_host: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(lab_host, capsys, "info", "0000:01:00.0")
    assert code == 1
    assert "open group on" in err and "vfio/9" in err
    assert "hint:" in err


def test_memlock(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["memlock", "--json", "--devices", "2", "--viommu", "4G"])
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert document["needed"] == 2 * (4 << 30) + (1 << 30)
    assert code == (0 if document["ok"] else 1)
    assert main(["memlock", "lots"]) == 2
    assert "memory size 'lots' is malformed" in capsys.readouterr().err
    for devices in ("-1", "65537", "9" * 5000, "two"):
        assert main(["memlock", "4G", "--devices", devices]) == 2
        assert "(0..65536)" in capsys.readouterr().err


def test_group_numbers_are_bounded_before_conversion(capsys: pytest.CaptureFixture[str]) -> None:
    for number in ("99999999999999999999", "9" * 5000):
        assert main(["--sample", "bind", "--dry-run", number]) == 2
        err = capsys.readouterr().err
        assert "IOMMU group" in err and "is out of range (0..4294967295)" in err
        assert "Traceback" not in err


def test_state_dir_option_wins(
    lab_host: FakeHost, kernel: KernelSim, capsys: pytest.CaptureFixture[str], scratch: Path
) -> None:
    chosen = scratch / "elsewhere"
    code, _, _ = run(lab_host, capsys, "bind", "--state-dir", str(chosen), "0000:01:00.0")
    assert code == 0
    assert (chosen / "0000:01:00.0.journal").is_file()
    assert not os.path.exists(state_dir(lab_host))


def test_unbind_and_restore_refuse_a_held_group_until_forced(
    lab_host: FakeHost, kernel: KernelSim, capsys: pytest.CaptureFixture[str]
) -> None:
    before = kernel.state()
    assert run(lab_host, capsys, "bind", "0000:01:00.0")[0] == 0
    hold_open(lab_host, 4242, "qemu-system-x86", os.path.join(lab_host.dev_root, "vfio/9"))
    for command in (["unbind", "0000:01:00.0"], ["restore"]):
        code, _, err = run(lab_host, capsys, *command)
        assert code == 1, err
        assert "IOMMU group 9 is open in another process (pid 4242 (qemu-system-x86)" in err
        assert "--force" in err
    code, out, _ = run(lab_host, capsys, "restore", "--force")
    assert code == 0
    assert "--force: 0000:01:00.0: IOMMU group 9 is open" in out
    assert kernel.state() == before


def test_damaged_journal_files_are_warnings_and_exit_1(
    lab_host: FakeHost, kernel: KernelSim, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(lab_host, capsys, "bind", "0000:01:00.0")[0] == 0
    Path(state_dir(lab_host), "0000:04:00.0.journal").write_text("garbage\n")
    code, out, err = run(lab_host, capsys, "restore", "--list", "--json")
    assert code == 1
    listed = json.loads(out)
    assert [e["bdf"] for e in listed["entries"]] == ["0000:01:00.0"]
    assert "0000:04:00.0.journal is damaged" in listed["problems"][0]
    code, out, err = run(lab_host, capsys, "restore")
    assert code == 1
    assert "restored" in out
    assert "kata-vfio: warning: journal entry" in err and "0000:04:00.0.journal" in err


def _journal(host: FakeHost) -> dict[str, bytes]:
    """The journal's entries (its lock file left out)."""
    root = Path(state_dir(host))
    entries = sorted(root.iterdir()) if root.is_dir() else []
    return {p.name: p.read_bytes() for p in entries if p.name != "lock"}


def test_bind_and_restore_run_twice_change_nothing_the_second_time(
    lab_host: FakeHost, kernel: KernelSim, capsys: pytest.CaptureFixture[str]
) -> None:
    before = kernel.state()
    assert run(lab_host, capsys, "bind", "0000:81:00.0")[0] == 0
    bound, journal = kernel.state(), _journal(lab_host)
    assert bound != before and journal
    writes = len(kernel.log)
    code, out, _ = run(lab_host, capsys, "bind", "0000:81:00.0")
    assert code == 0
    assert (kernel.state(), _journal(lab_host)) == (bound, journal)
    assert len(kernel.log) == writes, "a second bind writes nothing"
    assert "0 sysfs writes" in out
    assert run(lab_host, capsys, "restore")[0] == 0
    assert kernel.state() == before and _journal(lab_host) == {}
    code, out, _ = run(lab_host, capsys, "restore")
    assert code == 0 and "nothing to restore" in out
    assert kernel.state() == before and _journal(lab_host) == {}
