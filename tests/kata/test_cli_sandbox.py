"""``kata-vfio sandbox plan | container`` on a fake host with the bundled sample bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sandbox_hosts import Zoo

from kata_vfio.cli import main

SAMPLES = Path(__file__).resolve().parents[2] / "python" / "kata_vfio" / "kata" / "samples"
CONFIG = SAMPLES / "configuration-qemu-gpu.toml"


@pytest.fixture
def demo(zoo: Zoo, tmp_path: Path) -> dict[str, str]:
    """The sample bundles, a CDI spec for the zoo's GPUs, and the zoo's roots."""
    server, _names = zoo
    for name in ("sandbox", "container"):
        shutil.copytree(SAMPLES / name, tmp_path / name)
    roots = ["--sysfs-root", server.sysfs_root, "--dev-root", server.dev_root]
    spec_dir = str(tmp_path / "cdi")
    assert (
        main(
            [
                *roots,
                "cdi",
                "generate",
                "--kind",
                "nvidia.com/pgpu",
                "--naming",
                "index",
                "--output-dir",
                spec_dir,
            ]
        )
        == 0
    )
    return {"dir": str(tmp_path), "spec_dir": spec_dir, "roots": json.dumps(roots)}


def _run(demo: dict[str, str], *args: str) -> int:
    return main([*json.loads(demo["roots"]), *args])


def _plan_args(demo: dict[str, str]) -> list[str]:
    return [
        "sandbox",
        "plan",
        "--bundle",
        f"{demo['dir']}/sandbox",
        "--config",
        str(CONFIG),
        "--spec-dir",
        demo["spec_dir"],
        "--runtime-dir",
        f"{demo['dir']}/run",
    ]


def _json_out(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_plan_json_has_the_promised_shape(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _run(demo, *_plan_args(demo), "--json") == 0
    plan = _json_out(capsys)
    assert {"devices", "ports", "qemu_argv", "annotations_removed", "spec"} <= set(plan)
    assert plan["annotations_removed"] == ["cdi.k8s.io/vfio"]
    assert plan["cdi_devices"] == ["nvidia.com/pgpu=0"]
    # index 0 is the first GPU in PCI order: the L40S at 01:00.0 with its audio function
    assert [f["bdf"] for f in plan["devices"][0]["functions"]] == ["0000:01:00.0", "0000:01:00.1"]
    assert "vfio-pci,host=0000:01:00.1,id=vfio-0000-01-00.1,bus=rp0,addr=00.1" in plan["qemu_argv"]
    assert "cdi.k8s.io/vfio" not in plan["spec"]["annotations"]
    # without --write the bundle is untouched
    original = json.loads((SAMPLES / "sandbox" / "config.json").read_text())
    assert json.loads(Path(demo["dir"], "sandbox", "config.json").read_text()) == original


def test_plan_table_and_write(demo: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert _run(demo, *_plan_args(demo), "--write") == 0
    out = capsys.readouterr().out
    assert "annotations removed: cdi.k8s.io/vfio" in out
    assert "0000:01:00.1" in out and "rp0" in out and "08/00" in out
    assert "QEMU command line:" in out and "-device vfio-pci,host=0000:01:00.0" in out
    written = json.loads(Path(demo["dir"], "sandbox", "config.json").read_text())
    assert "cdi.k8s.io/vfio" not in written["annotations"]
    assert [d["path"] for d in written["linux"]["devices"]] == ["/dev/vfio/vfio", "/dev/vfio/11"]
    # planning the written spec again injects nothing a second time
    capsys.readouterr()
    assert _run(demo, *_plan_args(demo), "--json") == 0
    again = _json_out(capsys)
    assert again["cdi_devices"] == [] and again["annotations_removed"] == []
    assert [d["path"] for d in again["spec"]["linux"]["devices"]] == [
        "/dev/vfio/vfio",
        "/dev/vfio/11",
    ]


def test_container_against_a_stored_plan(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _run(demo, *_plan_args(demo), "--json") == 0
    plan_file = Path(demo["dir"], "plan.json")
    plan_file.write_text(capsys.readouterr().out)
    container = f"{demo['dir']}/container"
    # containerd's outer injection of the same annotation
    assert (
        _run(
            demo,
            "cdi",
            "--spec-dir",
            demo["spec_dir"],
            "inject",
            "--bundle",
            container,
            "--from-annotations",
        )
        == 0
    )
    capsys.readouterr()
    assert (
        _run(
            demo,
            "sandbox",
            "container",
            "--bundle",
            container,
            "--sandbox-plan",
            str(plan_file),
            "--json",
        )
        == 0
    )
    result = _json_out(capsys)
    assert result["annotations_added"] == {"cdi.k8s.io/vfio11": "nvidia.com/gpu=0"}
    assert result["annotations_removed"] == ["cdi.k8s.io/vfio"]
    assert result["agent_devices"] == [
        {
            "type": "vfio-pci-gk",
            "id": "vfio11",
            "container_path": "/dev/vfio/11",
            "options": ["0000:01:00.0=08/00", "0000:01:00.1=08/00.1"],
            "vm_path": "",
        }
    ]
    assert result["spec"]["linux"]["devices"] == []


def test_a_guest_kind_of_the_site_names_more_functions(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    audio = "10de:0403=example.com/audio"  # the GPU's HD audio companion
    assert _run(demo, *_plan_args(demo), "--guest-kind", audio, "--json") == 0
    plan = _json_out(capsys)
    kinds = {f["bdf"]: f["kind"] for f in plan["devices"][0]["functions"]}
    assert kinds == {"0000:01:00.0": "nvidia.com/gpu", "0000:01:00.1": "example.com/audio"}
    plan_file = Path(demo["dir"], "plan.json")
    plan_file.write_text(json.dumps(plan))
    container = f"{demo['dir']}/container"
    cdi = ["cdi", "--spec-dir", demo["spec_dir"], "inject", "--bundle", container]
    assert _run(demo, *cdi, "--from-annotations") == 0
    capsys.readouterr()
    args = ["sandbox", "container", "--bundle", container, "--sandbox-plan", str(plan_file)]
    assert _run(demo, *args, "--json") == 0
    added = _json_out(capsys)["annotations_added"]
    assert added == {"cdi.k8s.io/vfio11": "nvidia.com/gpu=0,example.com/audio=0"}


def test_a_malformed_guest_kind_is_a_usage_error(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert _run(demo, *_plan_args(demo), "--guest-kind", "10de=audio") == 2
    err = capsys.readouterr().err
    assert "invalid guest kind rule '10de=audio'" in err and "VENDOR:CLASS=KIND" in err
    assert "Traceback" not in err


def test_bad_inputs_give_clear_errors(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    bundle = f"{demo['dir']}/sandbox"
    assert (
        _run(demo, "sandbox", "plan", "--bundle", bundle, "--config", f"{demo['dir']}/none.toml")
        == 2
    )
    assert "argument --config: " in (err := capsys.readouterr().err) and "does not exist" in err
    assert _run(demo, *_plan_args(demo), "--device", "nvidia.com/pgpu=99") == 1
    err = capsys.readouterr().err
    assert "unresolvable CDI devices nvidia.com/pgpu=99" in err and "Traceback" not in err
    Path(demo["dir"], "bad.json").write_text("{")
    assert (
        _run(
            demo,
            "sandbox",
            "container",
            "--bundle",
            bundle,
            "--sandbox-plan",
            f"{demo['dir']}/bad.json",
        )
        == 2
    )
    assert "not valid JSON" in capsys.readouterr().err


def _container_with_edited_plan(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str], old: str, new: str
) -> tuple[int, str]:
    """``sandbox container`` against the sandbox plan with ``old`` replaced by ``new``."""
    capsys.readouterr()
    assert _run(demo, *_plan_args(demo), "--json") == 0
    plan = capsys.readouterr().out
    assert old in plan
    plan_file = Path(demo["dir"], "edited-plan.json")
    plan_file.write_text(plan.replace(old, new, 1))
    code = _run(
        demo,
        "sandbox",
        "container",
        "--bundle",
        f"{demo['dir']}/container",
        "--sandbox-plan",
        str(plan_file),
    )
    return code, capsys.readouterr().err


def test_a_plan_file_with_numbers_json_does_not_have_is_refused(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _container_with_edited_plan(
        demo, capsys, '"devices": [', '"nan": NaN, "devices": ['
    )
    assert code == 2
    assert "'NaN' is not a JSON number" in err and "Traceback" not in err


@pytest.mark.parametrize("vendor", ["0x1_0de", " 0x10de", "0x" + "f" * 5000, "0x-1", ""])
def test_a_plan_file_with_a_malformed_hex_number_is_refused(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str], vendor: str
) -> None:
    code, err = _container_with_edited_plan(
        demo, capsys, '"vendor": "0x10de"', f'"vendor": "{vendor}"'
    )
    assert code == 2
    assert "is not a hex number of at most 8 digits" in err and len(err) < 600


def _bytes(demo: dict[str, str], bundle: str) -> bytes:
    return Path(demo["dir"], bundle, "config.json").read_bytes()


def test_plan_write_twice_writes_the_same_bytes(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(demo, *_plan_args(demo), "--write") == 0
    once = _bytes(demo, "sandbox")
    assert _run(demo, *_plan_args(demo), "--write") == 0
    assert _bytes(demo, "sandbox") == once
    capsys.readouterr()


def test_plan_write_with_cold_plug_off_keeps_the_device_request(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """cold_plug_vfio = no-port injects nothing, so the cdi.k8s.io/ request must stay: the
    plan only warns, and deleting it would lose the device without a word."""
    config = Path(demo["dir"], "no-port.toml")
    text = CONFIG.read_text()
    assert 'cold_plug_vfio = "root-port"' in text
    config.write_text(text.replace('cold_plug_vfio = "root-port"', 'cold_plug_vfio = "no-port"'))
    args = [a if a != str(CONFIG) else str(config) for a in _plan_args(demo)]
    before = json.loads(_bytes(demo, "sandbox"))
    capsys.readouterr()
    for _ in range(2):
        assert _run(demo, *args, "--write") == 0
        err = capsys.readouterr().err
        assert "not cold-plugged: cold_plug_vfio is 'no-port'" in err
        written = json.loads(_bytes(demo, "sandbox"))
        assert written["annotations"]["cdi.k8s.io/vfio"] == "nvidia.com/pgpu=0"
        assert written == before


def _plan_file(demo: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert _run(demo, *_plan_args(demo), "--json") == 0
    plan_file = Path(demo["dir"], "plan.json")
    plan_file.write_text(capsys.readouterr().out)
    return str(plan_file)


def _container(demo: dict[str, str], plan: str, *more: str) -> int:
    container = f"{demo['dir']}/container"
    return _run(demo, "sandbox", "container", "--bundle", container, "--sandbox-plan", plan, *more)


def test_container_write_twice_keeps_the_runtimes_own_annotation(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The second run once removed cdi.k8s.io/vfio11 (the guest's own request): the container
    lost its GPU, exit 0. Now the second run is a no-op."""
    plan = _plan_file(demo, capsys)
    container = f"{demo['dir']}/container"
    injected = _run(
        demo, "cdi", "--spec-dir", demo["spec_dir"], "inject", "--bundle", container,
        "--from-annotations",
    )  # fmt: skip
    assert injected == 0
    assert _container(demo, plan, "--write") == 0
    once = _bytes(demo, "container")
    assert json.loads(once)["annotations"]["cdi.k8s.io/vfio11"] == "nvidia.com/gpu=0"
    capsys.readouterr()
    assert _container(demo, plan, "--write", "--json") == 0
    again = _json_out(capsys)
    assert _bytes(demo, "container") == once
    assert again["annotations_kept"] == ["cdi.k8s.io/vfio11"]
    assert again["annotations_removed"] == [] and again["annotations_added"] == {}


def test_container_asking_for_devices_never_injected_is_refused(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan_file(demo, capsys)
    before = _bytes(demo, "container")
    assert _container(demo, plan, "--write") == 1
    err = capsys.readouterr().err
    assert "nvidia.com/pgpu=0" in err and "never injected" in err
    assert "cdi.k8s.io/vfio=nvidia.com/pgpu=0" in err
    assert _bytes(demo, "container") == before


def test_plan_write_twice_with_explicit_devices_injects_once(
    demo: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*_plan_args(demo), "--device", "nvidia.com/pgpu=0", "--write"]
    assert _run(demo, *args) == 0
    once = _bytes(demo, "sandbox")
    rules = json.loads(once)["linux"]["resources"]["devices"]
    assert _run(demo, *args) == 0
    assert _bytes(demo, "sandbox") == once
    assert len(rules) == len({json.dumps(r, sort_keys=True) for r in rules})
    capsys.readouterr()
