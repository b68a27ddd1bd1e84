"""Fake hosts for the Kubernetes tests, in ``kata_vfio.testing``'s compact form.

Each device sits behind its own root port on bus ``n``; real IDs: H100
10de:2330, its HD-audio sibling on an L40S 10de:22ba, GH100 NVSwitch 10de:22a3, ConnectX-7 VF
15b3:101e, Grace Hopper's variant driver ``nvgrace_gpu_vfio_pci``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import kata_vfio
from kata_vfio.samples import sample_host
from kata_vfio.testing import FakeHost, build_host


class HostBuilder:
    """Adds functions one by one (each behind a new root port unless ``bus`` repeats)."""

    def __init__(self, **host: Any) -> None:
        self.host: dict[str, Any] = {"iommu": "intel", **host}
        self.devices: list[dict[str, Any]] = []
        self._group = 10
        self.last_group = 0
        self._ports: set[int] = set()

    def add(
        self,
        bus: int,
        ident: str = "10de:2330",
        klass: str = "030200",
        *,
        function: int = 0,
        driver: str | None = "vfio-pci",
        group: int | None = None,
        numa: int | None = 0,
        bars: list[str | None] | None = None,
    ) -> str:
        """One function at ``0000:<bus>:00.<function>``; a new group unless ``group``. Its
        root port is ``0000:00:<bus mod 32>.<bus div 32>`` (up to 255 ports)."""
        port = f"0000:00:{bus % 32:02x}.{bus // 32}"
        if bus not in self._ports:
            self._ports.add(bus)
            self.devices.append(
                {"bdf": port, "id": "8086:347a", "class": "060400", "driver": "pcieport",
                 "group": self._next(), "numa": numa}
            )  # fmt: skip
        bdf = f"0000:{bus:02x}:00.{function}"
        self.last_group = self._next() if group is None else group
        self.devices.append(
            {"bdf": bdf, "id": ident, "class": klass, "driver": driver, "parent": port,
             "group": self.last_group, "numa": numa,
             "bars": bars if bars is not None else ["16M mem64", None, "64G mem64 pref"]}
        )  # fmt: skip
        return bdf

    def _next(self) -> int:
        self._group += 1
        return self._group

    def build(self, root: Path) -> FakeHost:
        """Writes the tree under ``root``."""
        return build_host(root, {**self.host, "devices": self.devices})


def scan(host: FakeHost, details: bool = True) -> kata_vfio.Host:
    """The scan the agent makes of a fake host."""
    return kata_vfio.scan(host.sysfs_root, host.dev_root, host.proc_root, details=details)


def private_sample(root: Path) -> FakeHost:
    """A copy of the sample host that a test may change."""
    return sample_host(root / "sample")


class RunningAgent:
    """``run_device_plugin`` in a thread, fed by injected events; :meth:`stop` ends it and
    re-raises what it raised."""

    def __init__(
        self,
        host: FakeHost,
        plugin_dir: Path,
        cdi_dir: Path,
        *,
        resources: tuple[str, ...] = (),
        rescan: float = 30.0,
        iommu_mode: str = "auto",
        device_specs: bool = False,
        events: Any = None,
    ) -> None:
        from kata_vfio.k8s.agent import AgentConfig
        from kata_vfio.k8s.resources import parse_resources
        from kata_vfio.k8s.watch import ManualEvents, WatchConfig

        self.events = events if events is not None else ManualEvents()
        self.config = AgentConfig(
            watch=WatchConfig(
                host.paths,
                parse_resources(resources),
                iommu_mode=iommu_mode,
                rescan_interval=rescan,
            ),
            plugin_dir=str(plugin_dir),
            cdi_dir=str(cdi_dir),
            device_specs=device_specs,
        )
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from kata_vfio.k8s.agent import run_device_plugin

        try:
            run_device_plugin(self.config, self.stop_event, events=self.events)
        except BaseException as exc:
            self.error = exc

    def start(self) -> RunningAgent:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the agent did not stop"
        if self.error is not None:
            raise self.error


class FakeNode:
    """A fake host, a fake kubelet (device plugins and Pod Resources) and the agent, wired
    together; :meth:`admit` does what the kubelet does for a pod asking for units."""

    def __init__(self, tmp_path: Path, host: FakeHost, **agent: Any) -> None:
        from fake_kubelet import FakeKubelet
        from fake_podresources import FakePodResources

        self.host = host
        self.tmp = tmp_path
        self.plugin_dir = tmp_path / "device-plugins"
        self.cdi_dir = tmp_path / "cdi"
        self.kubelet = FakeKubelet(str(self.plugin_dir)).start()
        self.agent = RunningAgent(host, self.plugin_dir, self.cdi_dir, **agent).start()
        self.registration = self.kubelet.wait_registration()
        self.plugin = self.kubelet.plugin(self.registration.endpoint)
        self.pods = FakePodResources(str(tmp_path / "pod-resources.sock")).start()

    def admit(self, namespace: str, name: str, count: int) -> list[str]:
        """Preferred allocation among the Healthy units, Allocate, and the allocation recorded
        for Pod Resources; returns the CDI names Allocate gave."""
        from fake_podresources import Container

        watch = self.plugin.watch()
        available = sorted(i for i, (health, _) in watch.next().items() if health == "Healthy")
        watch.cancel()
        ids = self.plugin.preferred(available, [], count)
        (container,) = self.plugin.allocate(ids).container_responses
        resource = self.registration.resource_name
        self.pods.pods[(namespace, name)] = [Container("main", {resource: ids})]
        return [d.name for d in container.cdi_devices]

    def close(self) -> None:
        self.plugin.close()
        self.pods.stop()
        self.agent.stop()
        self.kubelet.stop()
