"""Preparing and unpreparing DRA claims on a fake host driven by the kernel simulator: whole
groups bound and given back to the drivers they had, per-claim CDI specs, refusals that bind
nothing, idempotency, the deadline, and recovery after a reboot."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from pathlib import Path

import pytest
import yaml
from dra_fakes import (
    BOOT_ID,
    DISK_NIC,
    DRIVER,
    GPU,
    LIVE_NIC,
    NODE,
    PAIR,
    DraRig,
    make_rig,
    write_boot_id,
)

import kata_vfio
from kata_vfio import binding
from kata_vfio.k8s.dra.ports import AllocatedDevice, ClaimRef
from kata_vfio.k8s.dra.prepare import ClaimResult, Deadline, dra_inventory, with_refusals
from kata_vfio.k8s.inventory import build_inventory
from kata_vfio.testing.kernel_sim import KernelSim

UID = "4a7d3c1e-1111-4c2b-9d5e-000000000001"
UID2 = "4a7d3c1e-2222-4c2b-9d5e-000000000002"


@pytest.fixture
def rig(tmp_path: Path) -> DraRig:
    return make_rig(tmp_path)


def spec_of(rig: DraRig, uid: str) -> dict[str, object]:
    path = rig.cdi_dir / f"k8s.{DRIVER}-unit_{uid}.yaml"
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def vfio_bound(rig: DraRig) -> list[str]:
    return sorted(b for b, d in rig.drivers().items() if d == "vfio-pci")


def test_a_two_function_group_is_bound_whole_and_given_back(rig: DraRig) -> None:
    before = rig.sim.state()
    preparer = rig.preparer()
    claim = rig.claims.add(UID, PAIR)
    result = preparer.prepare(claim, Deadline(30))
    assert result.error == ""
    (unit,) = result.units
    assert unit.cdi_id == f"k8s.{DRIVER}/unit={UID}-pci-0000-05-00-0"
    assert (unit.requests, unit.group, unit.bdfs) == (("nic",), 12, (PAIR, "0000:05:00.1"))
    assert vfio_bound(rig) == [PAIR, "0000:05:00.1"]
    spec = spec_of(rig, UID)
    assert spec["kind"] == f"k8s.{DRIVER}/unit"
    (device,) = spec["devices"]  # type: ignore[misc]
    assert device["name"] == f"{UID}-pci-0000-05-00-0"
    nodes = [n["path"] for n in device["containerEdits"]["deviceNodes"]]
    assert nodes == ["/dev/vfio/devices/vfio0", "/dev/vfio/devices/vfio1"]  # iommufd: cdevs
    assert spec["containerEdits"] == {"deviceNodes": [{"path": "/dev/iommu"}]}
    record = preparer.checkpoint.get(UID)
    assert record is not None and record.state == "prepared"

    assert preparer.unprepare(claim, Deadline(30)).error == ""
    assert rig.sim.state() == before
    assert not os.listdir(rig.cdi_dir)
    assert preparer.checkpoint.get(UID) is None
    assert binding.journal(preparer.journal_dir) == ()


def test_legacy_mode_names_the_group_node(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cdev=False)
    preparer = rig.preparer()
    result = preparer.prepare(rig.claims.add(UID, GPU, request="gpu"), Deadline(30))
    assert result.error == ""
    (device,) = spec_of(rig, UID)["devices"]  # type: ignore[misc]
    assert [n["path"] for n in device["containerEdits"]["deviceNodes"]] == ["/dev/vfio/41"]
    assert spec_of(rig, UID)["containerEdits"] == {"deviceNodes": [{"path": "/dev/vfio/vfio"}]}
    assert vfio_bound(rig) == [GPU, "0000:81:00.1"]


def test_unprepare_restores_the_driver_each_device_had(rig: DraRig) -> None:
    preparer = rig.preparer()
    claim = rig.claims.add(UID, GPU, request="gpu")
    assert preparer.prepare(claim, Deadline(30)).error == ""
    assert preparer.unprepare(claim, Deadline(30)).error == ""
    drivers = rig.drivers()
    assert (drivers[GPU], drivers["0000:81:00.1"]) == ("nvidia", "snd_hda_intel")


@pytest.mark.parametrize(
    ("bdf", "why"),
    [
        (LIVE_NIC, "network interface eth0 is up with an IPv4 route"),
        (DISK_NIC, "0000:06:00.1"),
    ],
)
def test_a_group_with_a_member_the_host_uses_is_refused_and_nothing_is_bound(
    rig: DraRig, bdf: str, why: str
) -> None:
    before = rig.sim.state()
    preparer = rig.preparer()
    # The claim also holds a unit that would bind: it must be rolled back too.
    claim = rig.claims.add(UID, PAIR, bdf)
    result = preparer.prepare(claim, Deadline(30))
    assert result.units == ()
    assert "refused" in result.error and why in result.error, result.error
    assert str(claim) in result.error
    assert rig.sim.state() == before
    assert not os.listdir(rig.cdi_dir) if rig.cdi_dir.exists() else True
    assert preparer.checkpoint.get(UID) is None
    assert binding.journal(preparer.journal_dir) == ()


def test_a_repeated_prepare_returns_the_same_ids_and_binds_nothing(rig: DraRig) -> None:
    preparer = rig.preparer()
    claim = rig.claims.add(UID, PAIR, GPU)
    first = preparer.prepare(claim, Deadline(30))
    writes = len(rig.sim.log)
    calls = rig.claims.calls
    again = preparer.prepare(claim, Deadline(30))
    assert again == first and first.error == ""
    assert len(rig.sim.log) == writes
    assert rig.claims.calls == calls, "a prepared claim is not read again"
    assert preparer.unprepare(claim, Deadline(30)).error == ""
    assert preparer.unprepare(claim, Deadline(30)).error == ""


def test_an_unknown_device_and_a_foreign_one(rig: DraRig) -> None:
    preparer = rig.preparer()
    claim = ClaimRef("default", "other", UID)
    rig.claims.claims[UID] = (
        "default",
        "other",
        [
            AllocatedDevice("nic", DRIVER, NODE, "pci-0000-99-00-0"),
            AllocatedDevice("nic", "other.example.com", NODE, "gpu-0"),
        ],
    )
    result = preparer.prepare(claim, Deadline(30))
    assert "unknown device 'pci-0000-99-00-0'" in result.error
    rig.claims.claims[UID][2].pop(0)
    assert preparer.prepare(claim, Deadline(30)) == preparer.prepare(claim, Deadline(30))
    assert preparer.prepare(claim, Deadline(30)).units == ()


def test_a_claim_the_api_server_cannot_give_fails_with_its_name(rig: DraRig) -> None:
    preparer = rig.preparer()
    result = preparer.prepare(ClaimRef("default", "gone", UID), Deadline(30))
    assert "default/gone" in result.error and "no longer exists" in result.error
    bad = preparer.prepare(ClaimRef("default", "x", "../../etc"), Deadline(30))
    assert "is not a Kubernetes UID" in bad.error


def test_an_expired_deadline_rolls_back_and_says_where(rig: DraRig) -> None:
    before = rig.sim.state()
    deadline = Deadline(30)
    preparer = rig.preparer(hook=lambda step: setattr(deadline, "end", 0.0))
    result = preparer.prepare(rig.claims.add(UID, PAIR, GPU), deadline)
    assert "timed out" in result.error and "before binding group" in result.error
    assert rig.sim.state() == before
    assert preparer.checkpoint.get(UID) is None


def test_a_busy_preparer_answers_busy_within_the_deadline(rig: DraRig) -> None:
    preparer = rig.preparer()
    with preparer._lock:  # another claim's prepare holds the host
        result = preparer.prepare(rig.claims.add(UID, PAIR), Deadline(0.05))
    assert result.error.startswith("busy:")


def test_a_write_the_kernel_refuses_rolls_back_what_was_bound(rig: DraRig) -> None:
    before = rig.sim.state()
    preparer = rig.preparer()
    rig.sim.fail_next("0000:81:00.1/driver_override", 5)  # EIO on the GPU's audio function
    result = preparer.prepare(rig.claims.add(UID, PAIR, GPU), Deadline(30))
    assert "pci-0000-81-00-0" in result.error and "binding failed" in result.error
    assert rig.sim.state() == before


def test_the_checkpoint_is_private_and_keyed_by_boot(rig: DraRig) -> None:
    preparer = rig.preparer()
    assert preparer.prepare(rig.claims.add(UID, PAIR), Deadline(30)).error == ""
    path = rig.state_dir / "checkpoint.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(rig.state_dir.stat().st_mode) == 0o700
    document = json.loads(path.read_text())
    assert document["bootID"] == BOOT_ID
    assert [c["state"] for c in document["claims"]] == ["prepared"]


def test_after_a_reboot_the_state_is_dropped_not_replayed(rig: DraRig) -> None:
    preparer = rig.preparer()
    assert preparer.prepare(rig.claims.add(UID, PAIR), Deadline(30)).error == ""
    old_journal = preparer.journal_dir
    # A reboot: the kernel forgets the binding (vfio-pci.ids= on the command line would keep
    # it on vfio, which the old journal must then not undo), and the boot ID changes.
    writes = len(rig.sim.log)
    write_boot_id(rig.host, "0d4c4f0e-aaaa-4bbb-8ccc-000000000099")
    after = rig.preparer(boot_id="0d4c4f0e-aaaa-4bbb-8ccc-000000000099")
    assert len(after.checkpoint) == 0
    assert not os.path.exists(old_journal)
    assert len(rig.sim.log) == writes, "nothing replayed"
    assert vfio_bound(rig) == [PAIR, "0000:05:00.1"]
    assert not os.listdir(rig.cdi_dir)


def test_a_prepared_claim_that_is_gone_is_released_at_start(rig: DraRig) -> None:
    before = rig.sim.state()
    preparer = rig.preparer()
    assert preparer.prepare(rig.claims.add(UID, PAIR), Deadline(30)).error == ""
    assert preparer.prepare(rig.claims.add(UID2, GPU), Deadline(30)).error == ""
    del rig.claims.claims[UID]  # force-deleted while the plugin was down
    restarted = rig.preparer()
    assert [r.claim.uid for r in restarted.prepared()] == [UID2]
    assert vfio_bound(rig) == [GPU, "0000:81:00.1"]
    assert [p.name for p in rig.cdi_dir.iterdir()] == [f"k8s.{DRIVER}-unit_{UID2}.yaml"]
    rig.claims.unreachable = True  # an API server that cannot answer keeps the claim
    assert [r.claim.uid for r in rig.preparer().prepared()] == [UID2]
    rig.claims.unreachable = False
    del rig.claims.claims[UID2]
    restarted = rig.preparer()
    restarted.release_gone()
    assert rig.sim.state() == before


def test_a_device_the_kernel_keeps_busy_fails_fast_as_busy(rig: DraRig) -> None:
    before = rig.sim.state()
    preparer = rig.preparer()
    rig.sim.fail_next("e1000e/unbind", errno.EBUSY, times=100)
    result = preparer.prepare(rig.claims.add(UID, PAIR), Deadline(30))
    assert "pci-0000-05-00-0 (group 12): busy:" in result.error, result.error
    assert rig.sim.state() == before


def test_the_dra_view_offers_groups_still_on_their_host_drivers(rig: DraRig) -> None:
    access = rig.access()
    dra = {u.id: u for u in dra_inventory(access).units}
    assert dra[PAIR].healthy and dra[GPU].healthy
    assert dra[PAIR].nodes == ()  # iommufd: the cdevs appear when the group is bound
    host = kata_vfio.scan(access.paths, details=True)
    plugin = {u.id: u for u in build_inventory(host, access.resources, "iommufd").units}
    assert not plugin[PAIR].healthy
    assert any("host driver e1000e" in r for r in plugin[PAIR].reasons), plugin[PAIR].reasons
    # The refusals a prepare would meet are reasons too, without a write.
    refused = {
        u.id: u
        for u in with_refusals(dra_inventory(access), access, str(rig.state_dir / "dry")).units
    }
    assert not refused[LIVE_NIC].healthy and not refused[DISK_NIC].healthy
    assert refused[PAIR].healthy and rig.sim.log == []


def test_two_claims_at_once_are_prepared_one_after_the_other(rig: DraRig) -> None:
    preparer = rig.preparer()
    claims = [rig.claims.add(UID, PAIR), rig.claims.add(UID2, GPU, request="gpu")]
    results: list[ClaimResult] = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(preparer.prepare(c, Deadline(30))))
        for c in claims
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r.error for r in results) == ["", ""]
    assert vfio_bound(rig) == [PAIR, "0000:05:00.1", GPU, "0000:81:00.1"]


def test_a_gpu_with_a_variant_driver_goes_to_it_and_back_to_nvidia(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.sim = KernelSim.for_host(
        rig.host,
        modules={"vfio_pci": "vfio-pci", "nvgrace_gpu_vfio_pci": "nvgrace_gpu_vfio_pci"},
    )
    aliases = Path(rig.host.root) / "modules/lib/modules/6.12.0-test"
    aliases.mkdir(parents=True)
    (aliases / "modules.alias").write_text(
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
        "alias vfio_pci:v000010DEd000026B9sv*sd*bc*sc*i* nvgrace_gpu_vfio_pci\n"
    )
    preparer = rig.preparer()
    claim = rig.claims.add(UID, GPU, request="gpu")
    assert preparer.prepare(claim, Deadline(30)).error == ""
    drivers = rig.drivers()
    assert (drivers[GPU], drivers["0000:81:00.1"]) == ("nvgrace_gpu_vfio_pci", "vfio-pci")
    assert preparer.unprepare(claim, Deadline(30)).error == ""
    drivers = rig.drivers()
    assert (drivers[GPU], drivers["0000:81:00.1"]) == ("nvidia", "snd_hda_intel")


def test_an_unprepare_while_a_vm_holds_the_group_is_refused_then_retried(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, cdev=False)
    preparer = rig.preparer()
    claim = rig.claims.add(UID, PAIR)
    assert preparer.prepare(claim, Deadline(30)).error == ""
    # As /proc shows a QEMU that has the group open (the node as this host's devfs names it).
    fd_dir = Path(rig.host.proc_root) / "4242" / "fd"
    fd_dir.mkdir(parents=True)
    (fd_dir.parent / "comm").write_text("qemu-system-x86\n")
    (fd_dir / "7").symlink_to(os.path.join(rig.host.dev_root, "vfio/12"))
    refused = preparer.unprepare(claim, Deadline(30))
    assert "restoring the devices of" in refused.error and "qemu" in refused.error, refused
    record = preparer.checkpoint.get(UID)
    assert record is not None and record.state == "unpreparing"
    assert vfio_bound(rig) == [PAIR, "0000:05:00.1"]
    (fd_dir / "7").unlink()  # the VM is gone; the kubelet retries
    assert preparer.unprepare(claim, Deadline(30)).error == ""
    assert rig.drivers()[PAIR] == "e1000e" and preparer.checkpoint.get(UID) is None


def test_a_state_directory_that_fails_is_a_claim_error_not_a_crash(rig: DraRig) -> None:
    before = rig.sim.state()
    preparer = rig.preparer()
    preparer.checkpoint.path = str(rig.state_dir / "missing-dir" / "checkpoint.json")
    result = preparer.prepare(rig.claims.add(UID, PAIR), Deadline(30))
    assert "the plugin's state failed" in result.error, result.error
    assert rig.sim.state() == before, "nothing was bound before the record could be written"
