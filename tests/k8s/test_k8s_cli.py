"""``kata-vfio k8s``: the inventory listing, and the device plugin as a real process (SIGTERM
stops it cleanly, SIGKILL strands nothing a restart does not clean)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fake_kubelet import FakeKubelet
from k8s_hosts import private_sample

from kata_vfio.cli import main

ENDPOINT = "kata-vfio-nvidia.com-pgpu.sock"


def test_inventory_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sample", "k8s", "inventory", "--json", "--iommu-mode", "legacy"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["mode"] == "legacy"
    (gpus,) = document["resources"]
    assert gpus["env"] == "PCI_RESOURCE_NVIDIA_COM_PGPU"
    first = gpus["units"][0]
    assert first["cdi_name"] == "nvidia.com/pgpu=0000:18:00.0"
    assert first["nodes"] == ["/dev/vfio/14"]
    assert first["functions"][0]["driver"] == "vfio-pci"
    rtx = next(u for u in gpus["units"] if u["id"] == "0000:a9:00.0")
    assert not rtx["healthy"] and "snd_hda_intel" in rtx["reasons"][0]


def test_inventory_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--sample", "k8s", "inventory", "--resource", "mellanox.com/vf=15b3:101e"]) == 0
    out = capsys.readouterr().out
    assert "mellanox.com/vf=15b3:101e (4 healthy of 4)" in out
    assert "0000:19:00.2" in out


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["k8s", "inventory", "--resource", "pgpu=10de:*"], 2, "needs a domain"),
        (["k8s", "inventory", "--iommu-mode", "fast"], 2, "invalid choice"),
        (["k8s", "device-plugin", "--rescan-interval", "0"], 2, "out of range"),
        (["k8s"], 2, "required"),
    ],
)
def test_bad_usage(
    args: list[str], code: int, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--sample", *args]) == code
    assert words in capsys.readouterr().err


def test_missing_plugin_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--sample", "k8s", "device-plugin", "--plugin-dir", str(tmp_path / "none")]
    assert main([*args, "--cdi-dir", str(tmp_path / "cdi")]) == 1
    err = capsys.readouterr().err
    assert "plugin directory" in err and "hint: mount the kubelet's device-plugins" in err


def _agent(host_root: Path, plugin_dir: Path, cdi_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kata_vfio", "--sysfs-root", str(host_root / "sys"),
         "--dev-root", str(host_root / "dev"), "k8s", "device-plugin",
         "--plugin-dir", str(plugin_dir), "--cdi-dir", str(cdi_dir), "--rescan-interval", "5"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_sigterm_stops_cleanly_and_sigkill_strands_nothing(tmp_path: Path) -> None:
    host = private_sample(tmp_path)
    plugin_dir = tmp_path / "device-plugins"
    cdi_dir = tmp_path / "cdi"
    kubelet = FakeKubelet(str(plugin_dir)).start()
    try:
        # SIGKILL: the socket stays behind, a restarted agent replaces it and registers again.
        killed = _agent(Path(host.root), plugin_dir, cdi_dir)
        assert kubelet.wait_registration(30).endpoint == ENDPOINT
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        assert killed.stderr is not None
        killed.stderr.close()
        assert (plugin_dir / ENDPOINT).exists()

        agent = _agent(Path(host.root), plugin_dir, cdi_dir)
        assert kubelet.wait_registration(30).endpoint == ENDPOINT
        agent.send_signal(signal.SIGTERM)
        _, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err
    finally:
        kubelet.stop()
    assert not (plugin_dir / ENDPOINT).exists()
    assert (cdi_dir / "nvidia.com-pgpu.yaml").exists(), "running pods still need the spec"
    assert not [n for n in os.listdir(cdi_dir) if n.endswith(".tmp")]
    for words in (
        "removed the stale socket",
        "registered with the kubelet",
        "unit nvidia.com/pgpu=0000:18:00.0 (group 14: 0000:18:00.0) Healthy",
        "Unhealthy: 0000:9a:00.0: endpoint bound to host driver nvidia",
        "got SIGTERM",
        "stopping: removing the plugin sockets, keeping the CDI specs",
    ):
        assert words in err
    assert "Traceback" not in err
