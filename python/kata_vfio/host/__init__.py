"""Host verdicts and views, read from a scan of the paths in a :class:`HostPaths` (sysfs,
devfs, procfs and modprobe; this machine's by default): is the host ready for VFIO passthrough
(:mod:`~kata_vfio.host.doctor`), can these devices be passed now
(:mod:`~kata_vfio.host.readiness`), is ``RLIMIT_MEMLOCK`` enough
(:mod:`~kata_vfio.host.memlock`), scan records as JSON-ready data
(:mod:`~kata_vfio.host.report`), and the one place facts are worded for people
(:mod:`~kata_vfio.host.render`)."""

from __future__ import annotations

from kata_vfio._core import HostPaths

__all__ = ["HostPaths"]
