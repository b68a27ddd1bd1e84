"""A real CDI consumer, podman (Go reference library inside), resolves specs this code wrote.

Optional: skipped when podman, runc or busybox is missing, when not root (podman 4 reads specs
only from /etc/cdi and /var/run/cdi), or when podman cannot run a container here. Each test
writes one spec with a unique name into /var/run/cdi and removes it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kata_vfio.cdi import (
    ContainerEdits,
    Device,
    DeviceNode,
    Registry,
    Spec,
    lstat_device,
    parse_spec,
)
from kata_vfio.cdi.registry import DYNAMIC_SPEC_DIR
from kata_vfio.errors import CdiSpecError

KIND = "kata-vfio.test/podman"
RUNC = "/usr/sbin/runc"


def _missing() -> str | None:
    for tool in ("podman", "busybox"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install podman runc busybox-static)"
    if not os.path.exists(RUNC):
        return "runc is not installed"
    if os.geteuid() != 0:
        return "podman 4 reads CDI specs only from /etc/cdi and /var/run/cdi: needs root"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    shutil.copy(shutil.which("busybox") or "", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    probe = _podman(root, [], "true")
    if probe.returncode != 0:
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()[-300:]}")
    return root


@pytest.fixture
def spec_dir() -> Iterator[Registry]:
    created = not os.path.isdir(DYNAMIC_SPEC_DIR)
    os.makedirs(DYNAMIC_SPEC_DIR, mode=0o755, exist_ok=True)
    yield Registry([DYNAMIC_SPEC_DIR])
    for leftover in Path(DYNAMIC_SPEC_DIR).glob(f"{_name('')}*"):
        leftover.unlink()
    if created:
        with contextlib.suppress(OSError):
            os.rmdir(DYNAMIC_SPEC_DIR)


def _podman(root: Path, devices: list[str], script: str) -> subprocess.CompletedProcess[str]:
    command = ["podman", "--runtime", RUNC, "run", "--rm", "--network", "none"]
    command += ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    for device in devices:
        command += ["--device", device]
    command += ["--rootfs", str(root), "/bin/busybox", "sh", "-c", script]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _name(tag: str) -> str:
    return f"kata-vfio.test-podman_{os.getpid()}_{tag}"


def test_podman_injects_a_spec_we_wrote(rootfs: Path, spec_dir: Registry) -> None:
    spec = Spec(
        "0.5.0",
        KIND,
        (
            Device(
                "0",
                ContainerEdits(
                    env=("KV_DEVICE=0",),
                    device_nodes=(DeviceNode("/dev/kvtest0", host_path="/dev/null"),),
                ),
            ),
        ),
        ContainerEdits(env=("KV_SPEC=1",)),
    )
    spec_dir.write_spec(spec, _name("plain"))
    done = _podman(rootfs, [f"{KIND}=0"], "ls -ln /dev/kvtest0; env")
    assert done.returncode == 0, done.stderr
    assert "1,   3" in done.stdout.splitlines()[0] or " 1, 3 " in done.stdout.splitlines()[0]
    assert "KV_DEVICE=0" in done.stdout and "KV_SPEC=1" in done.stdout
    # Our own injection of the same device gives the same node and env.
    ours = Registry([DYNAMIC_SPEC_DIR], device_lookup=lstat_device).inject(
        {"ociVersion": "1.2.0"}, [f"{KIND}=0"]
    )
    node = ours.spec["linux"]["devices"][0]
    assert (node["path"], node["type"], node["major"], node["minor"]) == ("/dev/kvtest0", "c", 1, 3)
    assert ours.spec["process"]["env"] == ["KV_SPEC=1", "KV_DEVICE=0"]


def test_podman_reads_unquoted_names_as_our_loader_does(rootfs: Path, spec_dir: Registry) -> None:
    # go-yaml v2: "1:2" stays a string (no base 60), "y" is the boolean true -> "true".
    text = (
        f"cdiVersion: 0.5.0\nkind: {KIND}\ndevices:\n"
        "- name: 1:2\n  containerEdits:\n    env: [KV_NAME=mig]\n"
        "- name: y\n  containerEdits:\n    env: [KV_NAME=bool]\n"
    )
    names = [d.name for d in parse_spec(text).devices]
    assert names == ["1:2", "true"]
    path = Path(DYNAMIC_SPEC_DIR) / f"{_name('unquoted')}.yaml"
    path.write_text(text)
    for name, expected in (("1:2", "KV_NAME=mig"), ("true", "KV_NAME=bool")):
        done = _podman(rootfs, [f"{KIND}={name}"], "env")
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout


def test_podman_rejects_the_spec_without_a_device_name(rootfs: Path, spec_dir: Registry) -> None:
    # The shape of the NVIDIA docs' pgpu sample: "name" mis-indented to the top level.
    text = (
        f"cdiVersion: 0.5.0\ncontainerEdits: {{}}\ndevices:\n- containerEdits:\n"
        f"    env: [A=1]\nname: '0'\nkind: {KIND}\n"
    )
    with pytest.raises(CdiSpecError, match="unknown field 'name'"):
        parse_spec(text)
    path = Path(DYNAMIC_SPEC_DIR) / f"{_name('noname')}.yaml"
    path.write_text(text)
    done = _podman(rootfs, [f"{KIND}=0"], "true")
    assert done.returncode != 0
    assert "unresolvable CDI devices" in done.stderr


def test_podman_reads_key_case_and_documents_as_our_loader_does(
    rootfs: Path, spec_dir: Registry
) -> None:
    # Go's JSON decoder matches keys case-insensitively (of "Kind" and "kind", the one later in
    # sorted order wins), and go-yaml reads only the first document of a file.
    texts = {
        "folded.yaml": (
            f"Kind: other.test/zz\nkind: {KIND}\nCdiVersion: 0.5.0\ndevices:\n"
            "- Name: folded\n  ContainerEdits:\n    env: [KV_KEYS=folded]\n---\nnot: [yaml\n"
        ),
        "first.json": (
            f'{{"cdiVersion": "0.5.0", "kind": "{KIND}", "devices": [{{"name": "first", '
            '"containerEdits": {"env": ["KV_KEYS=first"]}}]}\n{"garbage": \n'
        ),
    }
    for suffix, text in texts.items():
        (Path(DYNAMIC_SPEC_DIR) / _name(suffix)).write_text(text)
    ours = Registry([DYNAMIC_SPEC_DIR])
    for device, expected in (("folded", "KV_KEYS=folded"), ("first", "KV_KEYS=first")):
        assert ours.get_device(f"{KIND}={device}") is not None, dict(ours.errors)
        done = _podman(rootfs, [f"{KIND}={device}"], "env")
        assert done.returncode == 0, done.stderr
        assert expected in done.stdout
    assert ours.get_device("other.test/zz=folded") is None
    done = _podman(rootfs, ["other.test/zz=folded"], "true")
    assert "unresolvable CDI devices" in done.stderr


def test_podman_refuses_a_merge_that_overrides_as_our_loader_does(
    rootfs: Path, spec_dir: Registry
) -> None:
    text = (
        f"cdiVersion: 0.5.0\nkind: {KIND}\ndevices:\n- name: base\n  containerEdits: &e\n"
        "    env: [KV_M=base]\n- name: over\n  containerEdits:\n    <<: *e\n    env: [KV_M=over]\n"
    )
    with pytest.raises(CdiSpecError, match="duplicate key 'env'"):
        parse_spec(text)
    (Path(DYNAMIC_SPEC_DIR) / f"{_name('merge')}.yaml").write_text(text)
    done = _podman(rootfs, [f"{KIND}=base"], "true")
    assert done.returncode != 0
    assert "unresolvable CDI devices" in done.stderr
