"""``kata-vfio k8s dra-plugin``: usage errors exit 2 with the reason, and the plugin as a real
process registers, answers, and stops cleanly on SIGTERM (exit 0, sockets removed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dra_fakes import DRIVER, NODE, PAIR, RESOURCES, make_rig
from fake_dra_kubelet import FakeDraKubelet

from kata_vfio.cli import main

CHILD = Path(__file__).with_name("dra_cli_child.py")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--driver-name", "Bad_Name", "--node-name", "n"], "invalid DRA driver name"),
        (["--driver-name", DRIVER, "--node-name", "n", "--deadline", "60"], "out of range"),
        (["--driver-name", DRIVER], "--node-name"),
        (["--driver-name", DRIVER, "--node-name", "n", "--resource", "x=10de:*"], "domain"),
    ],
)
def test_bad_usage_exits_2_with_the_reason(
    args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--sample", "k8s", "dra-plugin", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_sigterm_stops_the_plugin_cleanly(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    uid = "0f6e7d8c-0000-4000-8000-000000000001"
    (tmp_path / "claims.json").write_text(json.dumps([{"uid": uid, "name": "nic", "bdfs": [PAIR]}]))
    plugins, registry = tmp_path / "plugins", tmp_path / "registry"
    plugins.mkdir()
    registry.mkdir()
    host = rig.host
    argv = [
        *("--sysfs-root", host.sysfs_root, "--dev-root", host.dev_root),
        *("--proc-root", host.proc_root, "k8s", "dra-plugin"),
        *("--driver-name", DRIVER, "--node-name", NODE, "--plugin-dir", str(plugins)),
        *("--registry-dir", str(registry), "--cdi-dir", str(rig.cdi_dir)),
        *("--state-dir", str(rig.state_dir), "--no-uevents", "--cleanup"),
        *(a for r in RESOURCES for a in ("--resource", r)),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(CHILD.parent), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, str(CHILD), str(tmp_path), "--", *argv],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        kubelet = FakeDraKubelet(str(registry))
        registered = kubelet.register(DRIVER)
        client = kubelet.plugin(registered, "v1beta1.DRAPlugin")
        # A claim this node never prepared: the unprepare is done already.
        answer = client.unprepare(("default", "nic", uid))
        assert answer == {uid: ""}
        client.close()
    finally:
        time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "got SIGTERM" in err and "registered with the kubelet" in err
    assert os.listdir(registry) == []
    assert not os.path.exists(registered.endpoint)
