"""``kata-vfio scan | groups | check | doctor`` on fake hosts, the sample host and this machine."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kata_vfio.cli import main
from kata_vfio.testing import FakeHost, build_host
from shared_paths import snapshot_names


def host_spec() -> dict[str, Any]:
    return {
        "iommu": "intel",
        "devices": [
            {"bdf": "0000:00:01.0", "id": "8086:347a", "class": "060400", "driver": "pcieport",
             "group": 1},
            {"bdf": "0000:01:00.0", "id": "10de:2330", "class": "030200", "subsys": "10de:16c1",
             "rev": 0xA1, "parent": "0000:00:01.0", "driver": "vfio-pci", "group": 12},
            {"bdf": "0000:00:02.0", "id": "8086:347a", "class": "060400", "driver": "pcieport",
             "group": 2},
            {"bdf": "0000:02:00.0", "id": "10de:26b9", "class": "030000",
             "parent": "0000:00:02.0", "driver": "vfio-pci", "group": 13},
            {"bdf": "0000:02:00.1", "id": "10de:22ba", "class": "040300",
             "parent": "0000:00:02.0", "driver": "snd_hda_intel", "group": 13},
        ],
    }  # fmt: skip


@pytest.fixture
def fake(tmp_path: Path) -> FakeHost:
    return build_host(tmp_path, host_spec())


def run(fake: FakeHost, *args: str) -> list[str]:
    return [
        "--sysfs-root", fake.sysfs_root, "--dev-root", fake.dev_root,
        "--proc-root", fake.proc_root, *args,
    ]  # fmt: skip


def call(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_scan_json(fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, run(fake, "scan", "--json"))
    assert code == 0
    devices = json.loads(out)["devices"]
    assert [d["bdf"] for d in devices] == [
        "0000:00:01.0", "0000:00:02.0", "0000:01:00.0", "0000:02:00.0", "0000:02:00.1",
    ]  # fmt: skip
    gpu = devices[2]
    assert gpu["vendor"] == "10de" and gpu["device"] == "2330"
    assert gpu["subsystem_vendor"] == "10de" and gpu["subsystem_device"] == "16c1"
    assert gpu["class"] == "030200" and gpu["revision"] == "a1"
    assert gpu["driver"] == "vfio-pci" and gpu["iommu_group"] == 12
    assert gpu["pcie"] is True and gpu["numa_node"] is None
    assert gpu["assignable"] is True
    assert devices[4]["assignable"] is False
    assert out == json.dumps(json.loads(out), indent=2, sort_keys=True) + "\n"


def test_scan_table(fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, run(fake, "scan"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "BDF",
        "CLASS",
        "ID",
        "DRIVER",
        "GROUP",
        "NUMA",
        "PCIE",
        "ASSIGNABLE",
    ]
    gpu = next(line for line in lines if line.startswith("0000:01:00.0"))
    assert "3D controller" in gpu and "10de:2330" in gpu and gpu.split()[-1] == "yes"


def test_scan_details(fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, run(fake, "scan", "--details", "--json"))
    assert code == 0
    gpu = json.loads(out)["devices"][2]
    assert "bars" in gpu and "large_bar" in gpu and "link" in gpu
    # The table shows the same extra fields.
    code, out, _ = call(capsys, ["--sample", "scan", "--details"])
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[-4:] == ["BARS", "LARGE", "RESET", "LINK"]
    h100 = next(row for row in rows if row.startswith("0000:18:00.0"))
    assert h100.split()[-6:] == ["16MiB,128GiB,32MiB", "yes", "flr,bus", "32.0", "GT/s", "x16"]
    code, out, _ = call(capsys, ["--sample", "scan"])
    assert "BARS" not in out.splitlines()[0]


def test_groups(fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, run(fake, "groups", "--json"))
    assert code == 0
    groups = {g["id"]: g for g in json.loads(out)["groups"]}
    assert groups[12]["assignable"] is True
    assert groups[13]["assignable"] is False and groups[13]["viable"] is False
    assert groups[13]["endpoints"] == ["0000:02:00.0", "0000:02:00.1"]
    (blocker,) = groups[13]["blockers"]
    assert blocker["bdf"] == "0000:02:00.1" and blocker["driver"] == "snd_hda_intel"
    assert blocker["fix"] == "kata-vfio bind --group 13"
    assert blocker["manual"][1].endswith("/bus/pci/drivers/snd_hda_intel/unbind")
    code, out, _ = call(capsys, run(fake, "groups"))
    assert code == 0
    assert "group 13: NOT VIABLE" in out
    assert "fix: kata-vfio bind --group 13" in out
    assert "group 1:" not in out  # bridges only, hidden without --all
    code, out, _ = call(capsys, run(fake, "groups", "--all"))
    assert "group 1: no endpoints" in out


def test_check(fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, run(fake, "check", "--json", "01:00.0"))
    assert code == 0
    (result,) = json.loads(out)["devices"]
    assert result["assignable"] is True and result["group"] == 12
    assert result["node"] == "/dev/vfio/12"
    code, out, _ = call(capsys, run(fake, "check", "--json", "0000:01:00.0", "0000:02:00.0"))
    assert code == 1
    first, second = json.loads(out)["devices"]
    assert first["assignable"] and not second["assignable"]
    assert second["together"] == ["0000:02:00.0", "0000:02:00.1"]
    assert "kata-vfio bind --group 13" in second["hint"]
    code, out, _ = call(capsys, run(fake, "check", "0000:00:01.0", "0000:09:00.0"))
    assert code == 1
    assert "bridge" in out and "no PCI device 0000:09:00.0" in out


def test_bad_input_is_usage_error(fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = call(capsys, run(fake, "check", "0000:01:00.0/../.."))
    assert code == 2
    assert '"0000:01:00.0/../.."' in err and "Traceback" not in err
    code, _, err = call(capsys, ["--sysfs-root", "/nonexistent/sys", "scan"])
    assert code == 2 and "--sysfs-root" in err
    code, _, err = call(capsys, ["frobnicate"])
    assert code == 2
    code, _, err = call(capsys, ["--sample", "--sysfs-root", "/sys", "scan"])
    assert code == 2


def test_doctor_on_fake_host(fake: FakeHost, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, run(fake, "doctor", "--json"))
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["iommu"]["status"] == "pass"
    assert checks["vfio-modules"]["status"] == "pass"
    assert checks["assignable-groups"]["status"] == "pass"
    assert set(checks) >= {"kernel-arguments", "memlock", "node-permissions", "iommufd"}
    assert all(c["status"] in ("pass", "warn", "fail") for c in checks.values())
    assert code == (0 if all(c["status"] == "pass" for c in checks.values()) else 1)
    assert json.loads(out)["host"] == {
        "sysfs": fake.sysfs_root, "devfs": fake.dev_root, "procfs": fake.proc_root,
    }  # fmt: skip
    code, out, _ = call(capsys, run(fake, "doctor"))
    assert out.splitlines()[0] == (
        f"host read: sysfs {fake.sysfs_root}, devfs {fake.dev_root}, procfs {fake.proc_root}"
    )


def test_doctor_without_iommu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = host_spec()
    spec["iommu"] = False
    spec["firmware_table"] = False
    for dev in spec["devices"]:
        dev.pop("group")
        if dev["driver"] == "vfio-pci":
            dev.pop("driver")
    fake = build_host(tmp_path, spec)
    code, out, _ = call(capsys, run(fake, "doctor"))
    assert code == 1
    assert "[fail] iommu" in out
    assert "intel_iommu=on" in out and "--sample" in out
    code, out, _ = call(capsys, run(fake, "groups"))
    assert code == 1 and "no IOMMU groups" in out


def test_sample_host(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = call(capsys, ["--sample", "groups", "--json"])
    assert code == 0
    groups = json.loads(out)["groups"]
    assert any(g["assignable"] for g in groups)
    assert any(not g["viable"] and len(g["endpoints"]) > 1 for g in groups)
    code, out, _ = call(capsys, ["--sample", "doctor"])
    assert code == 0, out


def test_this_machine_never_tracebacks() -> None:
    for command in (["doctor"], ["groups"], ["scan"], ["scan", "--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "kata_vfio", *command], capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode in (0, 1), proc.stderr
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("name", snapshot_names())
def test_every_command_on_real_snapshots(
    name: str, snapshot_root: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The commands on copies of real machines' sysfs (no devfs beside them: the machine's
    own /dev must not be mixed in)."""
    root = snapshot_root(name)
    listed = sorted(p.name for p in (root / "bus/pci/devices").iterdir())
    code, out, _ = call(capsys, ["--sysfs-root", str(root), "scan", "--json"])
    assert code == 0
    assert [d["bdf"] for d in json.loads(out)["devices"]] == listed
    code, out, _ = call(capsys, ["--sysfs-root", str(root), "groups", "--json"])
    document = json.loads(out)
    assert code == (0 if document["iommu"]["enabled"] else 1)
    assert document["iommu"]["vfio_container_node"] is False  # not this machine's /dev
    grouped = sorted(b for g in document["groups"] for b in g["devices"])
    assert set(grouped) <= set(listed)
    code, out, _ = call(capsys, ["--sysfs-root", str(root), "doctor", "--json"])
    statuses = {c["name"]: c["status"] for c in json.loads(out)["checks"]}
    assert statuses["iommu"] == ("pass" if document["iommu"]["enabled"] else "fail")
    code, out, _ = call(capsys, ["--sysfs-root", str(root), "check", "--json", listed[0]])
    assert code in (0, 1)
    assert json.loads(out)["devices"][0]["bdf"] == listed[0]


def test_doctor_passes_an_iommufd_only_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kernel without the legacy container (no /dev/vfio/vfio), with /dev/iommu and cdevs."""
    spec = host_spec() | {"vfio_container": False}
    fake = build_host(tmp_path / "iommufd", spec)
    assert not (Path(fake.dev_root) / "vfio" / "vfio").exists()
    assert list((Path(fake.dev_root) / "vfio" / "devices").iterdir())
    code, out, _ = call(capsys, run(fake, "doctor", "--json"))
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["vfio-container-node"]["status"] == "pass"
    assert "iommufd and their cdevs" in checks["vfio-container-node"]["detail"]
    assert checks["iommufd"]["status"] == "pass"
    assert not [c for c in checks.values() if c["status"] == "fail"], checks
    assert code == 0
    # Without cdevs for the devices bound to vfio-pci, neither path works: a failure.
    spec = host_spec() | {"vfio_container": False, "cdev": False}
    fake = build_host(tmp_path / "neither", spec)
    (Path(fake.dev_root) / "iommu").touch()  # /dev/iommu without the cdev option
    code, out, _ = call(capsys, run(fake, "doctor", "--json"))
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["vfio-container-node"]["status"] == "fail"
    assert "CONFIG_VFIO_DEVICE_CDEV" in checks["vfio-container-node"]["hint"]
    assert code == 1


def test_doctor_vm_memory_takes_the_one_size_convention(
    fake: FakeHost, capsys: pytest.CaptureFixture[str]
) -> None:
    details = set()
    for size in ("16G", "16384M", "17179869184", "16GiB"):
        code, out, _ = call(capsys, run(fake, "doctor", "--json", "--vm-memory", size))
        assert code in (0, 1)
        checks = {c["name"]: c for c in json.loads(out)["checks"]}
        details.add(checks["memlock"]["detail"])
    assert len(details) == 1, details
    assert "needs 17 GiB" in details.pop()  # 16 GiB and 1 GiB of headroom
    for bad, why in (("16384", "less than 1 MiB"), ("lots", "malformed"), ("9" * 5000, "large")):
        code, _, err = call(capsys, run(fake, "doctor", "--vm-memory", bad))
        assert code == 2
        assert "--vm-memory" in err and why in err
        assert "16384M" in err, "the hint names the accepted forms"
        assert "Traceback" not in err


def _readme_blocks(heading: str) -> list[list[str]]:
    """The fenced output blocks of one README section, as lines."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [
        block.split("```", 1)[0].strip("\n").splitlines() for block in section.split("```\n")[1::2]
    ]


def test_the_readme_group_examples_are_what_the_cli_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kata_vfio.samples import sample_host

    blocks = [b for b in _readme_blocks("CLI") if b and b[0].startswith("group ")]
    not_viable, unknown, platform = blocks
    code, out, _ = call(capsys, ["--sample", "groups"])
    assert code == 0
    lines = out.splitlines()
    start = lines.index(not_viable[0])
    assert lines[start : start + len(not_viable)] == not_viable
    start = lines.index(platform[0])
    shown = [line for line in platform if line.strip() != "..."]
    assert all(line in lines[start : start + 10] for line in shown)
    copy = sample_host(tmp_path / "sample")
    Path(copy.sysfs_root, "bus/pci/devices/0000:a9:00.1").unlink()
    code, out, _ = call(capsys, run(copy, "groups"))
    assert code == 1
    lines = out.splitlines()
    start = lines.index(unknown[0])
    assert lines[start : start + len(unknown)] == unknown


EMPTY_REASON = re.compile(r"^\s*$|None|\(\s*\)|:\s*$|: ;|, \)|\(\s*,")


def _check_every_device(capsys: pytest.CaptureFixture[str], roots: list[str]) -> str:
    code, out, _ = call(capsys, [*roots, "scan", "--json"])
    bdfs = [d["bdf"] for d in json.loads(out)["devices"]]
    assert bdfs
    code, out, err = call(capsys, [*roots, "check", *bdfs])
    assert code in (0, 1) and "Traceback" not in err
    return out


@pytest.mark.parametrize("name", ["sample", *snapshot_names()])
def test_check_gives_every_device_a_reason_with_words(
    name: str, snapshot_root: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    roots = ["--sample"] if name == "sample" else ["--sysfs-root", str(snapshot_root(name))]
    lines = _check_every_device(capsys, roots).splitlines()
    # A header line ("blocker X (driver):") is followed by its indented reason.
    empty = [
        (i, line)
        for i, line in enumerate(lines)
        if EMPTY_REASON.search(line)
        and not (line.rstrip().endswith("):") and i + 1 < len(lines) and lines[i + 1].strip())
    ]
    assert empty == []
    verdicts = [line for line in lines if not line.startswith(" ")]
    assert all(line.endswith((": assignable", ": NOT assignable")) for line in verdicts)
    reasons = [lines[i + 1] for i, line in enumerate(lines) if line in verdicts]
    assert all(reason.startswith("  ") and len(reason.strip()) > 10 for reason in reasons)
