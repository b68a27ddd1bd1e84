"""Host verdicts and views, read from a scan of the paths in a :class:`HostPaths` (sysfs,
devfs, procfs and modprobe; this machine's by default): is the host ready for VFIO passthrough
(:mod:`~kata_vfio.host.doctor`), can these devices be passed now
(:mod:`~kata_vfio.host.readiness`), is ``RLIMIT_MEMLOCK`` enough
(:mod:`~kata_vfio.host.memlock`), and scan records as JSON-ready data
(:mod:`~kata_vfio.host.report`)."""

from __future__ import annotations

from kata_vfio._core import HostPaths

__all__ = ["HostPaths"]
