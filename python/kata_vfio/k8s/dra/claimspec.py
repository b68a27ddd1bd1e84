"""The DRA plugin's CDI specs: one file per prepared claim.

The claim with UID ``U`` gets ``<cdi-dir>/k8s.<driver>-unit_U.yaml`` (the CDI name of a
transient spec), kind ``k8s.<driver>/unit``, one device per unit named ``U-<device>``
(``<device>`` the DRA device name, ``pci-0000-18-00-0``), carrying the group's VFIO nodes:
``/dev/vfio/<group>`` in legacy mode, every cdev of the group in iommufd mode; the control
node (``/dev/vfio/vfio`` or ``/dev/iommu``) is a spec-level edit. Per-claim names, as the
kubelet plugin helper recommends: two claims never share a device entry, and removing one
claim's file touches no other pod.

Files are written atomically (mode 0644, as every CDI spec) and are the plugin's alone: at
start it removes those of claims it has not prepared and the temporaries of a killed write.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

from kata_vfio._atomic import remove_file
from kata_vfio.cdi.names import qualified_name, validate_vendor_name
from kata_vfio.cdi.registry import Registry, transient_spec_file_name
from kata_vfio.errors import InvalidInputError
from kata_vfio.k8s.cdispec import vfio_spec
from kata_vfio.k8s.inventory import IommuMode

__all__ = ["CDI_CLASS", "ClaimSpecs", "validate_claim_uid"]

CDI_CLASS = "unit"

# A Kubernetes UID is a UUID; anything that could leave the file name is refused.
_UID = re.compile(r"[0-9A-Za-z][-0-9A-Za-z]{0,63}")

log = logging.getLogger(__name__)


def validate_claim_uid(uid: str) -> None:
    """Raises :class:`InvalidInputError` unless ``uid`` looks like a Kubernetes UID (letters,
    digits and ``-``, at most 64): it becomes part of file and device names."""
    if not _UID.fullmatch(uid):
        raise InvalidInputError(
            f"claim UID {uid[:80]!r} is not a Kubernetes UID (letters, digits, '-')",
            hint="the kubelet passes the ResourceClaim's metadata.uid",
        )


class ClaimSpecs:
    """The per-claim specs of driver ``driver`` in ``cdi_dir``."""

    def __init__(self, cdi_dir: str, driver: str) -> None:
        self.cdi_dir = cdi_dir
        self.vendor = f"k8s.{driver}"
        validate_vendor_name(self.vendor)
        self.kind = f"{self.vendor}/{CDI_CLASS}"
        self._registry = Registry([cdi_dir])
        self._prefix = transient_spec_file_name(self.vendor, CDI_CLASS, "")

    def path_for(self, uid: str) -> str:
        """Where the spec of the claim with UID ``uid`` lives."""
        validate_claim_uid(uid)
        return os.path.join(self.cdi_dir, self._prefix + uid + ".yaml")

    @staticmethod
    def device_for(uid: str, device: str) -> str:
        """The CDI device name of a claim's device (``<uid>-<device>``)."""
        return f"{uid}-{device}"

    def cdi_id(self, uid: str, device: str) -> str:
        """The fully qualified CDI name the kubelet passes on (``k8s.<driver>/unit=<name>``)."""
        return qualified_name(self.vendor, CDI_CLASS, self.device_for(uid, device))

    def write(self, uid: str, devices: Sequence[tuple[str, Sequence[str]]], mode: IommuMode) -> str:
        """Writes the claim's spec: ``devices`` as ``(DRA device name, node paths)``; returns
        the path. Raises :class:`~kata_vfio.errors.HostIOError` (the old file, if any, stays)."""
        path = self.path_for(uid)
        spec = vfio_spec(
            self.kind, [(self.device_for(uid, name), nodes) for name, nodes in devices], mode
        )
        return self._registry.write_spec(spec, os.path.basename(path))

    def remove(self, uid: str) -> bool:
        """Removes the claim's spec; False when there was none."""
        return remove_file(self.path_for(uid))

    def claims_on_disk(self) -> list[str]:
        """The UIDs of the claims that have a spec file here."""
        uids = []
        for name in self._names():
            if name.startswith(self._prefix) and name.endswith(".yaml"):
                uid = name[len(self._prefix) : -len(".yaml")]
                if _UID.fullmatch(uid):
                    uids.append(uid)
        return uids

    def remove_temporaries(self) -> list[str]:
        """Removes what a killed write left (``.<spec>.XXXX.tmp``); returns their paths."""
        removed = []
        for name in self._names():
            if name.startswith("." + self._prefix) and name.endswith(".tmp"):
                path = os.path.join(self.cdi_dir, name)
                remove_file(path)
                removed.append(path)
        return removed

    def _names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.cdi_dir))
        except FileNotFoundError:
            return []
