"""``kata-vfio cdi``: list, validate, generate, inject; exit codes and JSON shapes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cdi_support import CDI_DATA, OCI_DATA, copy_data, oci_spec, pgpu_spec_text, requires_data

from kata_vfio.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def spec_dir_with_pgpu(tmp_path: Path) -> Path:
    d = tmp_path / "cdi"
    d.mkdir()
    (d / "nvidia.com-pgpu.yaml").write_text(pgpu_spec_text(14, 22))
    return d


def test_list_prints_devices_with_spec_and_priority(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    low = spec_dir_with_pgpu(tmp_path)
    high = tmp_path / "run"
    high.mkdir()
    (high / "x.yaml").write_text(pgpu_spec_text(22))
    code, out, _ = run(
        capsys, "cdi", "--spec-dir", str(low), "--spec-dir", str(high), "--json", "list"
    )
    assert code == 0
    document = json.loads(out)
    assert document == {
        "devices": [
            {
                "name": "nvidia.com/pgpu=14",
                "spec": str(low / "nvidia.com-pgpu.yaml"),
                "priority": 0,
            },
            {"name": "nvidia.com/pgpu=22", "spec": str(high / "x.yaml"), "priority": 1},
        ],
        "errors": {},
    }
    code, out, _ = run(capsys, "cdi", "--spec-dir", str(low), "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["DEVICE", "SPEC", "PRIORITY"]
    assert "nvidia.com/pgpu=22" in out


def test_list_reports_errors_per_file_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = spec_dir_with_pgpu(tmp_path)
    (d / "broken.yaml").write_text("cdiVersion: [")
    (d / "old.yml").write_text(pgpu_spec_text(99))
    code, out, err = run(capsys, "cdi", "--spec-dir", str(d), "list", "--json")
    assert code == 1
    document = json.loads(out)
    assert [dev["name"] for dev in document["devices"]] == [
        "nvidia.com/pgpu=14",
        "nvidia.com/pgpu=22",
    ]
    assert list(document["errors"]) == [str(d / "broken.yaml")]
    assert isinstance(document["errors"][str(d / "broken.yaml")], list)
    assert "old.yml is ignored" in err


def test_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = copy_data(
        requires_data(CDI_DATA / "nvidia-container-toolkit/nvidia-ctk-generate-default.yaml"),
        tmp_path / "good.yaml",
    )
    bad = copy_data(
        requires_data(CDI_DATA / "nvidia-cloud-native-docs/nvidia.com-pgpu.yaml"),
        tmp_path / "bad.yaml",
    )
    code, out, _ = run(capsys, "cdi", "validate", str(good))
    assert code == 0
    assert out.startswith(f"ok       {good}: example.com/device, 2 device(s)")
    code, out, _ = run(capsys, "cdi", "validate", "--json", str(good), str(bad))
    assert code == 1
    files = json.loads(out)["files"]
    assert [f["valid"] for f in files] == [True, False]
    assert files[0]["devices"] == ["example.com/device=0", "example.com/device=all"]
    assert "unknown field 'name'" in files[1]["errors"][0]
    # A file that is not there is bad input (exit 2), named, before anything is read.
    missing = tmp_path / "missing.yaml"
    code, out, err = run(capsys, "cdi", "validate", "--json", str(good), str(missing))
    assert (code, out) == (2, "")
    assert f"{str(missing)!r} does not exist" in err
    code, out, err = run(capsys, "cdi", "validate", str(tmp_path))
    assert (code, out) == (2, "")
    assert "is a directory, not a file" in err
    code, _, err = run(capsys, "cdi", "validate")
    assert code == 2
    assert "FILE" in err


def test_generate_prints_or_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "--sample", "cdi", "generate", "--kind", "nvidia.com/pgpu", "--naming", "index"
    )
    assert code == 0
    assert out.startswith('---\ncdiVersion: "0.5.0"\nkind: nvidia.com/pgpu\n')
    assert '- name: "0"' in out
    out_dir = tmp_path / "out"
    code, out, _ = run(
        capsys, "--sample", "cdi", "generate", "--output-dir", str(out_dir), "--json"
    )
    assert code == 0
    document = json.loads(out)
    assert document["written"] == [
        str(out_dir / "nvidia.com-nvswitch.yaml"),
        str(out_dir / "nvidia.com-pgpu.yaml"),
    ]
    assert [s["kind"] for s in document["specs"]] == ["nvidia.com/nvswitch", "nvidia.com/pgpu"]
    assert stat.S_IMODE(os.stat(out_dir / "nvidia.com-pgpu.yaml").st_mode) == 0o644
    code, _, err = run(capsys, "--sample", "cdi", "generate", "--naming", "uuid")
    assert code == 2
    assert "invalid choice" in err
    code, _, err = run(
        capsys, "--sample", "cdi", "generate", "--kind", "x.com/y", "--pci-id", "ffff"
    )
    assert code == 1
    assert "no assignable VFIO devices for x.com/y" in err


def write_bundle(tmp_path: Path, annotations: dict[str, str]) -> Path:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(oci_spec(annotations=annotations), indent=2))
    os.chmod(bundle / "config.json", 0o640)
    return bundle


def test_inject_from_annotations_and_strip_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "cdi"
    run(capsys, "--sample", "cdi", "generate", "--kind", "nvidia.com/pgpu", "--output-dir", str(d))
    names = [
        x["name"]
        for x in json.loads(run(capsys, "cdi", "--spec-dir", str(d), "list", "--json")[1])[
            "devices"
        ]
    ]
    first = names[0]
    bundle = write_bundle(tmp_path, {"cdi.k8s.io/vfio": first, "keep": "me"})
    code, out, _ = run(
        capsys,
        "--sample",
        "cdi",
        "--spec-dir",
        str(d),
        "inject",
        "--bundle",
        str(bundle),
        "--from-annotations",
        "--strip-annotations",
        "--json",
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["devices"] == [first]
    assert summary["removed_annotations"] == {"cdi.k8s.io/vfio": first}
    assert summary["written"] is True
    group = first.split("=")[1]
    assert [dev["path"] for dev in summary["added"]["devices"]] == [
        "/dev/vfio/vfio",
        f"/dev/vfio/{group}",
    ]
    config = json.loads((bundle / "config.json").read_text())
    assert config["annotations"] == {"keep": "me"}
    assert [dev["path"] for dev in config["linux"]["devices"]] == [
        "/dev/vfio/vfio",
        f"/dev/vfio/{group}",
    ]
    assert stat.S_IMODE(os.stat(bundle / "config.json").st_mode) == 0o640
    # Again: nothing left to inject, nothing to strip, the file is not rewritten.
    before = (bundle / "config.json").read_bytes()
    code, out, _ = run(
        capsys,
        "--sample",
        "cdi",
        "--spec-dir",
        str(d),
        "inject",
        "--bundle",
        str(bundle),
        "--from-annotations",
        "--strip-annotations",
    )
    assert code == 0
    assert "nothing to do" in out
    assert (bundle / "config.json").read_bytes() == before


def test_inject_failure_leaves_the_file_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = spec_dir_with_pgpu(tmp_path)
    bundle = write_bundle(tmp_path, {"cdi.k8s.io/vfio": "nvidia.com/pgpu=14,nvidia.com/pgpu=vfio1"})
    before = (bundle / "config.json").read_bytes()
    code, _, err = run(
        capsys,
        "cdi",
        "--spec-dir",
        str(d),
        "inject",
        "--bundle",
        str(bundle),
        "--from-annotations",
        "--strip-annotations",
    )
    assert code == 1
    assert "unresolvable CDI devices nvidia.com/pgpu=vfio1" in err
    assert "hint:" in err
    assert (bundle / "config.json").read_bytes() == before
    # A device whose host node is missing: the real /dev has no /dev/vfio/14 here.
    code, _, err = run(
        capsys,
        "cdi",
        "--spec-dir",
        str(d),
        "inject",
        "--oci-spec",
        str(bundle / "config.json"),
        "--device",
        "nvidia.com/pgpu=14",
    )
    if Path("/dev/vfio/14").exists():
        pytest.skip("this machine really has /dev/vfio/14")
    assert code == 1
    assert "failed to stat CDI host device" in err
    assert (bundle / "config.json").read_bytes() == before
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json"]


def test_inject_real_device_and_malformed_specs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "cdi"
    d.mkdir()
    (d / "null.yaml").write_text(
        "cdiVersion: 0.5.0\nkind: kata.test/null\ndevices:\n- name: '0'\n  containerEdits:\n"
        "    env: [DEV=null]\n    deviceNodes:\n"
        "    - path: /dev/kvtest0\n      hostPath: /dev/null\n"
    )
    spec_file = copy_data(
        requires_data(OCI_DATA / "runtime-spec/schema/test/config/good/spec-example.json"),
        tmp_path / "config.json",
    )
    code, out, _ = run(
        capsys,
        "cdi",
        "--spec-dir",
        str(d),
        "inject",
        "--oci-spec",
        str(spec_file),
        "--device",
        "kata.test/null=0",
        "--dry-run",
        "--json",
    )
    assert code == 0
    assert json.loads(out)["added"]["devices"][0] == {
        "path": "/dev/kvtest0",
        "type": "c",
        "major": 1,
        "minor": 3,
        "fileMode": stat.S_IMODE(os.stat("/dev/null").st_mode),
        "uid": 1,
        "gid": 1,
    }
    code, out, _ = run(
        capsys,
        "cdi",
        "--spec-dir",
        str(d),
        "inject",
        "--oci-spec",
        str(spec_file),
        "--device",
        "kata.test/null=0",
    )
    assert code == 0
    assert "device /dev/kvtest0 (c 1:3)" in out
    assert "DEV=null" in json.loads(spec_file.read_text())["process"]["env"]
    broken = tmp_path / "broken.json"
    broken.write_text('{"ociVersion": "1.0.0", "process": {"env": "A=1"}}')
    code, _, err = run(
        capsys,
        "cdi",
        "--spec-dir",
        str(d),
        "inject",
        "--oci-spec",
        str(broken),
        "--device",
        "kata.test/null=0",
    )
    assert code == 2
    assert "process.env" in err
    code, _, err = run(capsys, "cdi", "inject", "--device", "a.com/b=c")
    assert code == 2


def test_console_script_runs(tmp_path: Path) -> None:
    exe = shutil.which("kata-vfio")
    command = [exe] if exe else [sys.executable, "-m", "kata_vfio"]
    d = spec_dir_with_pgpu(tmp_path)
    done = subprocess.run(
        [*command, "cdi", "--spec-dir", str(d), "list", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    assert len(document["devices"]) == 2


@pytest.mark.parametrize(
    "request_by", [["--from-annotations"], ["--device", "FIRST"]], ids=["annotations", "device"]
)
def test_inject_twice_gives_the_same_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], request_by: list[str]
) -> None:
    """Without --strip-annotations the request stays; injecting it again must not add the
    device's cgroup rule (or anything else) a second time."""
    d = tmp_path / "cdi"
    run(capsys, "--sample", "cdi", "generate", "--kind", "nvidia.com/pgpu", "--output-dir", str(d))
    listed = json.loads(run(capsys, "cdi", "--spec-dir", str(d), "list", "--json")[1])
    first = listed["devices"][0]["name"]
    bundle = write_bundle(tmp_path, {"cdi.k8s.io/vfio": first})
    argv = [
        "--sample", "cdi", "--spec-dir", str(d), "inject", "--bundle", str(bundle),
        *[first if a == "FIRST" else a for a in request_by],
    ]  # fmt: skip
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    once = (bundle / "config.json").read_bytes()
    assert f"injected {first}" in out
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert (bundle / "config.json").read_bytes() == once
    assert summary["written"] is False
    assert summary["already_injected"] == [first]
    code, out, _ = run(capsys, *argv)
    assert f"already injected {first}" in out and "left unchanged" in out


def test_generate_twice_writes_the_same_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "cdi"
    argv = ["--sample", "cdi", "generate", "--output-dir", str(d)]
    assert run(capsys, *argv)[0] == 0
    once = {p.name: p.read_bytes() for p in sorted(d.iterdir())}
    assert once
    assert run(capsys, *argv)[0] == 0
    assert {p.name: p.read_bytes() for p in sorted(d.iterdir())} == once
