"""A verdict is never more optimistic than the kernel, and the tree given is the tree read.

The scenarios of issue 8 on copies of the sample host and of the real snapshots: a group
member the kernel lists without a device directory, a member directory an unprivileged user
cannot read, a cut-off ``uevent``, an unreadable ``resource``, permission denied told apart
from missing; links that leave the root (absolute, ``..``), FIFOs and device nodes where an
attribute should be (an error, never a hang). Every case is checked against the reference
scanner too.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import kata_vfio
from kata_vfio.cli import main
from kata_vfio.host import doctor as host_doctor  # imported before any child drops to nobody
from kata_vfio.samples import sample_host
from kata_vfio.testing import FakeHost
from oracles import refscan
from oracles.compare import assert_same_host
from shared_paths import SNAPSHOTS, copy_snapshot, snapshot_names

GPU = (
    "0000:a9:00.0"  # RTX 6000 Ada (10de:26b1) on vfio-pci; its HDMI audio function shares group 85
)
AUDIO = "0000:a9:00.1"
H100 = "0000:18:00.0"  # alone in its group, on vfio-pci
NOBODY = 65534


@pytest.fixture
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHost]:
    """A private copy of the sample host, in a directory every user can enter (the
    unprivileged scans run as ``nobody``)."""
    root = Path(tempfile.mkdtemp(prefix="kata-vfio-optimism-"))
    root.chmod(0o755)
    try:
        yield sample_host(root / "host")
    finally:
        _chmod_tree(root)
        shutil.rmtree(root)


def _chmod_tree(root: Path) -> None:
    """Makes every directory enterable again so the tree can be removed."""
    for directory, dirs, _files in os.walk(root):
        for name in dirs:
            path = Path(directory, name)
            if not path.is_symlink():
                path.chmod(0o755)


def _scan(host: FakeHost, **kw: Any) -> kata_vfio.Host:
    return kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root, **kw)


def _same_as_reference(host: FakeHost, details: bool = False) -> kata_vfio.Host:
    rust = _scan(host, details=details)
    ref = refscan.scan(host.sysfs_root, host.dev_root, host.proc_root, details=details)
    assert_same_host(rust, ref)
    return rust


def _cli(host: FakeHost, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    roots = ["--sysfs-root", host.sysfs_root, "--dev-root", host.dev_root]
    roots += ["--proc-root", host.proc_root]
    code = main([*roots, *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def _as_nobody(work: Callable[[], Any]) -> Any:
    """Runs ``work`` in a forked child that has dropped to ``nobody`` (no capabilities), and
    returns what it returned (JSON-able), or raises what it raised."""
    if os.geteuid() != 0:
        return work()  # already unprivileged
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns into pytest
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            payload = {"ok": work()}
        except BaseException as exc:
            payload = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(payload).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    payload = json.loads(b"".join(chunks))
    if "error" in payload:
        raise AssertionError(payload["error"])
    return payload["ok"]


def _group_facts(host: kata_vfio.Host, bdf: str) -> dict[str, Any]:
    """The group of ``bdf`` as plain data (to come back from an unprivileged child)."""
    group = host.group_of(bdf)
    assert group is not None
    return {
        "verdict": group.verdict,
        "viable": group.viable,
        "assignable": group.assignable,
        "unplaced": [str(b) for b in group.unplaced],
        "blockers": [
            {
                "bdf": str(b.bdf),
                "kind": b.kind,
                "fix": b.fix.action,
                "problem": None if b.problem is None else [b.problem.attribute, b.problem.reason],
            }
            for b in group.blockers
        ],
        "unreadable": [[str(p.bdf), p.attribute, p.reason] for p in host.unreadable],
    }


# --- group membership against kernel/iommu_groups -------------------------------------------


def test_a_listed_member_without_its_directory_makes_the_group_unknown(
    sample: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _scan(sample).group_of(GPU)
    assert before is not None and not before.viable  # the audio function is on snd_hda_intel
    # The bus link goes; kernel/iommu_groups/85/devices still lists the function.
    Path(sample.sysfs_root, "bus/pci/devices", AUDIO).unlink()
    host = _same_as_reference(sample)
    assert host.find_device(AUDIO) is None
    group = host.group_of(GPU)
    assert group is not None
    assert (group.verdict, group.viable, group.assignable) == ("unknown", False, False)
    (blocker,) = group.blockers
    assert str(blocker.bdf) == AUDIO and blocker.kind == "unknown"
    assert blocker.problem is not None
    assert (blocker.problem.attribute, blocker.problem.reason) == ("device", "missing")
    assert blocker.fix.action == "none" and blocker.writes == ()
    code, out = _cli(sample, capsys, "check", GPU)
    assert code == 1
    assert "NOT assignable" in out and AUDIO in out and "device directory is missing" in out
    assert "kata-vfio bind" not in out
    code, out = _cli(sample, capsys, "groups", "--json")
    assert code == 1
    data = json.loads(out)
    (entry,) = [g for g in data["groups"] if g["id"] == group.id]
    assert entry["verdict"] == "unknown" and entry["blockers"][0]["fix"] is None
    code, out = _cli(sample, capsys, "groups")
    assert code == 1 and f"group {group.id}: UNKNOWN" in out


def test_an_unreadable_member_is_permission_denied_not_missing(
    sample: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    device_dir = Path(sample.device_path(AUDIO))
    device_dir.chmod(0)
    facts = _as_nobody(lambda: _group_facts(_scan(sample), GPU))
    assert facts["verdict"] == "unknown" and not facts["viable"] and not facts["assignable"]
    assert facts["unreadable"] == [[AUDIO, "uevent", "permission-denied"]]
    assert facts["blockers"] == [
        {"bdf": AUDIO, "kind": "unknown", "fix": "none", "problem": ["uevent", "permission-denied"]}
    ]
    # The reference scanner, as the same user, says the same.
    ref = _as_nobody(
        lambda: [
            [p.bdf, p.attribute, p.reason]
            for p in refscan.scan(sample.sysfs_root, sample.dev_root, sample.proc_root).unreadable
        ]
    )
    assert ref == facts["unreadable"]
    # As root the same tree reads through: the kernel's verdict, not viable.
    if os.geteuid() == 0:
        assert _group_facts(_scan(sample), GPU)["verdict"] == "not-viable"


def test_an_unreadable_sysfs_root_says_permission_denied(
    sample: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(sample.sysfs_root, "bus/pci").chmod(0)

    def attempt() -> str:
        try:
            _scan(sample)
        except kata_vfio.errors.HostIOError as exc:
            return f"{exc.errno} {exc} | {exc.hint}"
        return "no error"

    got = _as_nobody(attempt)
    assert got.startswith("13 ") and "permission denied" in got
    assert "missing" not in got


def test_a_snapshot_without_a_group_listing_cannot_place_an_unreadable_function(
    tmp_path: Path,
) -> None:
    """The real snapshots have no kernel/iommu_groups: membership comes from each function's
    own link, so one that cannot be read could be in any group, and every group says so."""
    if "ghw-thinkpad-x1c10-adl" not in snapshot_names():
        pytest.skip(f"snapshots not found under {SNAPSHOTS}")
    work = Path(tempfile.mkdtemp(prefix="kata-vfio-snapshot-"))
    work.chmod(0o755)
    try:
        sysfs = copy_snapshot(SNAPSHOTS / "ghw-thinkpad-x1c10-adl", work / "snap")
        for directory, dirs, _ in os.walk(work):
            for name in dirs:
                Path(directory, name).chmod(0o755)
        xhci = "0000:00:14.0"  # group 8, with the two Thunderbolt functions
        device = Path(sysfs, "bus/pci/devices", xhci).resolve()
        assert _scan_snapshot(sysfs).group_of("0000:00:0d.2") is not None
        device.chmod(0)
        facts = _as_nobody(lambda: _snapshot_facts(sysfs))
        assert facts["unreadable"] == [[xhci, "uevent", "permission-denied"]]
        assert facts["verdicts"] == ["unknown"]
        assert all(u == [xhci] for u in facts["unplaced"])
    finally:
        _chmod_tree(work)
        shutil.rmtree(work)


def _scan_snapshot(sysfs: Path) -> kata_vfio.Host:
    return kata_vfio.scan(str(sysfs), str(sysfs.parent / "dev"))


def _snapshot_facts(sysfs: Path) -> dict[str, Any]:
    host = _scan_snapshot(sysfs)
    return {
        "unreadable": [[str(p.bdf), p.attribute, p.reason] for p in host.unreadable],
        "verdicts": sorted({g.verdict for g in host.groups}),
        "unplaced": [[str(b) for b in g.unplaced] for g in host.groups],
    }


# --- uevent, resource -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "PCI_CLASS=30200\n",  # cut after the first line: no DRIVER= line in what is left
        "PCI_CLASS=30200\nPCI_ID=10DE:2330\nPCI_SUBSYS_ID=10DE:16C1\nMODALIAS=pci:v000010DE",
        "\n\n",
    ],
)
def test_a_cut_uevent_does_not_turn_vfio_pci_into_no_driver(sample: FakeHost, text: str) -> None:
    Path(sample.device_path(H100), "uevent").write_text(text)
    host = _same_as_reference(sample)
    device = host.device(H100)
    assert device.driver == "vfio-pci"  # from the driver link
    assert [(p.attribute, p.reason) for p in device.problems] == [("uevent", "invalid")]
    group = host.group_of(H100)
    assert group is not None and group.assignable


def test_a_cut_uevent_of_a_host_driver_is_not_unbound(sample: FakeHost) -> None:
    """The audio function's driver stays snd_hda_intel: its group stays not viable (a cut-off
    uevent must not make it look unbound, which would be "viable")."""
    uevent = Path(sample.device_path(AUDIO), "uevent")
    uevent.write_text(uevent.read_text().split("\n", 1)[1][:20])
    host = _same_as_reference(sample)
    assert host.device(AUDIO).driver == "snd_hda_intel"
    group = host.group_of(GPU)
    assert group is not None and group.verdict == "not-viable"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("0x0 0xffffffffffffffff 0x200\n" + "0x0 0x0 0x0\n" * 12, "invalid"),  # 2^64 bytes
        ("0x0000000000001000 0x0000000000000fff 0x200\n" + "0x0 0x0 0x0\n" * 12, "invalid"),
        ("0x0 0x0 0x0\n" * 3, "invalid"),  # cut short
        ("", "invalid"),
        (None, "missing"),
    ],
)
def test_unknown_bars_are_none_not_empty(
    sample: FakeHost, content: str | None, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    resource = Path(sample.device_path(H100), "resource")
    if content is None:
        resource.unlink()
    else:
        resource.write_text(content)
    host = _same_as_reference(sample, details=True)
    device = host.device(H100)
    assert device.has_details and device.bars is None and device.large_bar is None
    assert [(p.attribute, p.reason) for p in device.problems] == [("resource", reason)]
    _code, out = _cli(sample, capsys, "scan", "--details", "--json")
    (entry,) = [d for d in json.loads(out)["devices"] if d["bdf"] == H100]
    assert entry["bars"] is None and entry["problems"][0]["reason"] == reason


# --- the tree given is the tree read ----------------------------------------------------------


def _outside(tmp: Path) -> Path:
    """A fake device directory outside the root, that would read as a vfio-pci GPU."""
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "uevent").write_text(
        "DRIVER=vfio-pci\nPCI_CLASS=30200\nPCI_ID=10DE:2330\nPCI_SUBSYS_ID=10DE:16C1\n"
        "MODALIAS=pci:v000010DEd00002330sv000010DEsd000016C1bc03sc02i00\n"
    )
    return outside


def test_a_device_link_that_leaves_the_root_is_refused(
    sample: FakeHost, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = _outside(tmp_path)
    link = Path(sample.sysfs_root, "bus/pci/devices", AUDIO)
    link.unlink()
    link.symlink_to(outside)  # absolute
    host = _same_as_reference(sample)
    assert host.find_device(AUDIO) is None
    assert [(str(p.bdf), p.attribute, p.reason) for p in host.unreadable] == [
        (AUDIO, "device", "escapes-root")
    ]
    code, out = _cli(sample, capsys, "scan")
    assert code == 1 and f"{AUDIO} cannot be read" in out and "leaves the sysfs root" in out
    group = host.group_of(GPU)
    assert group is not None and group.verdict == "unknown"
    link.unlink()
    link.symlink_to(os.path.relpath(outside, link.parent))  # `..` past the root
    host = _same_as_reference(sample)
    assert [p.reason for p in host.unreadable] == ["escapes-root"]


def test_links_inside_the_tree_that_leave_it_are_refused(sample: FakeHost, tmp_path: Path) -> None:
    outside = _outside(tmp_path)
    device = Path(sample.device_path(AUDIO))
    # An attribute that is a link (the kernel never makes one): not followed.
    (device / "uevent").unlink()
    (device / "uevent").symlink_to(outside / "uevent")
    # A directory on the way that is an absolute link.
    iommu = Path(sample.sysfs_root, "class/iommu")
    shutil.move(iommu, tmp_path / "iommu")
    iommu.symlink_to(tmp_path / "iommu")
    # Device nodes and procfs files that lead out of their roots.
    vfio = Path(sample.dev_root, "vfio/vfio")
    vfio.unlink()
    vfio.symlink_to("/dev/null")
    cmdline = Path(sample.proc_root, "cmdline")
    cmdline.unlink()
    cmdline.symlink_to("/proc/cmdline")
    host = _same_as_reference(sample)
    audio = host.device(AUDIO)
    assert audio.driver == "snd_hda_intel"  # from its driver link, not the planted uevent
    assert ("uevent", "not-a-regular-file") in [(p.attribute, p.reason) for p in audio.problems]
    assert host.iommu.iommu_class == ()
    assert not host.iommu.vfio_container_node
    assert host.iommu.cmdline is None
    assert set(host.iommu.unreadable) == {
        ("sys/class/iommu", "escapes-root"),
        ("dev/vfio/vfio", "escapes-root"),
        ("proc/cmdline", "not-a-regular-file"),
    }


def test_a_group_listing_that_leaves_the_root_makes_every_group_unknown(
    sample: FakeHost, tmp_path: Path
) -> None:
    groups = Path(sample.sysfs_root, "kernel/iommu_groups")
    shutil.move(groups, tmp_path / "iommu_groups")
    groups.symlink_to(tmp_path / "iommu_groups")
    host = _same_as_reference(sample)
    assert {g.verdict for g in host.groups} == {"unknown"}
    assert {g.listing_problem for g in host.groups} == {"escapes-root"}
    assert not any(g.assignable for g in host.groups)


def _scan_in_child(host: FakeHost, timeout: float = 60) -> dict[str, Any]:
    """Scans in a child process, so that a hang fails the test instead of blocking it."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()

    def work() -> None:
        scanned = _scan(host)
        queue.put(
            {
                str(d.bdf): [[p.attribute, p.reason] for p in d.problems]
                for d in scanned.devices
                if d.problems
            }
        )

    child = context.Process(target=work)
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        pytest.fail("the scan blocked on a FIFO or device node")
    return queue.get(timeout=5)


def test_fifos_and_device_nodes_are_errors_not_hangs(sample: FakeHost) -> None:
    device = Path(sample.device_path(AUDIO))
    for name in ("uevent", "numa_node"):
        (device / name).unlink()
        os.mkfifo(device / name)
    expected = [["uevent", "not-a-regular-file"], ["numa_node", "not-a-regular-file"]]
    if os.geteuid() == 0:
        (device / "revision").unlink()
        os.mknod(device / "revision", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero
        expected.insert(1, ["revision", "not-a-regular-file"])
    problems = _scan_in_child(sample)
    assert problems[AUDIO] == expected
    host = _same_as_reference(sample)
    assert host.device(AUDIO).driver == "snd_hda_intel"


def test_the_cdi_devfs_lookup_stays_in_the_dev_root(sample: FakeHost) -> None:
    from kata_vfio.cdi import DevfsLookup

    lookup = DevfsLookup(sample.dev_root, sample.sysfs_root)
    group = lookup("/dev/vfio/85")  # a plain file in the fake tree: numbers from sysfs
    assert group.type == "c" and group.major > 0
    Path(sample.dev_root, "host").symlink_to("/dev")
    with pytest.raises(OSError, match="cross-device") as info:
        lookup("/dev/host/null")  # would be the real /dev/null through an absolute link
    assert info.value.errno == 18  # EXDEV


def test_doctor_says_permission_denied_not_missing(
    sample: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    Path(sample.dev_root, "vfio").chmod(0)

    def doctor() -> dict[str, str]:
        checks = host_doctor.diagnose(_scan(sample))
        return {c.name: c.detail for c in checks}

    details = _as_nobody(doctor)
    assert "cannot be checked: permission denied" in details["vfio-container-node"]
    assert "missing" not in details["vfio-container-node"]
