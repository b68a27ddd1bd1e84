"""The DRA plugin's checkpoint: which claims it prepared, with what, keyed by boot ID.

The kubelet may call ``NodeUnprepareResources`` after the claim is gone from the API server,
and the plugin may be killed at any moment; so what a claim got (its units, their groups and
functions, its CDI device IDs) is kept on disk, in ``<state-dir>/checkpoint.json``, written
atomically with mode 0600 in a directory of mode 0700. A claim's record goes through:

* ``preparing``: written before the first sysfs write of its prepare; a record still in this
  state when the plugin starts is a prepare that was interrupted, and is rolled back;
* ``prepared``: written after its CDI spec; a repeated prepare returns the same IDs;
* ``unpreparing``: written before the first restore; finished on the next start.

The file carries the boot ID it was written under (``/proc/sys/kernel/random/boot_id``): after
a reboot, bindings, VFIO nodes and ``driver_override`` are gone, so the records describe
nothing on this host any more and are dropped.
"""

from __future__ import annotations

import errno as errno_codes
import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from kata_vfio._atomic import atomic_write, read_regular_fd, read_regular_file
from kata_vfio._core import Bdf
from kata_vfio._trust import make_directories
from kata_vfio.errors import HostIOError, InvalidInputError
from kata_vfio.k8s.dra.claimspec import validate_claim_uid
from kata_vfio.k8s.dra.ports import ClaimRef

__all__ = [
    "CHECKPOINT_FILE",
    "Checkpoint",
    "ClaimRecord",
    "ClaimState",
    "PreparedUnit",
    "read_boot_id",
]

CHECKPOINT_FILE = "checkpoint.json"
ClaimState = Literal["preparing", "prepared", "unpreparing"]

_KIND = "kata-vfio/dra-checkpoint"
_VERSION = 1
_STATES = ("preparing", "prepared", "unpreparing")
# A checkpoint of 1000 claims with 8 units each is under 2 MiB.
_LIMIT = 8 << 20
_BOOT_ID_LIMIT = 64

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PreparedUnit:
    """One unit of a claim: the DRA device, the requests it serves and the group bound."""

    device: str
    requests: tuple[str, ...]
    unit_id: str
    group: int
    bdfs: tuple[str, ...]
    cdi_id: str = ""
    """The fully qualified CDI device name; empty until the claim's spec is written."""


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    """A claim the plugin prepares, has prepared or unprepares."""

    claim: ClaimRef
    state: ClaimState
    units: tuple[PreparedUnit, ...]


def read_boot_id(proc_root: str) -> str:
    """This boot's ID from ``<proc_root>/sys/kernel/random/boot_id``; raises
    :class:`HostIOError` naming the file when it cannot be read or is empty."""
    path = os.path.join(proc_root, "sys/kernel/random/boot_id")
    text = read_regular_file(path, limit=_BOOT_ID_LIMIT, what="boot ID").decode(errors="replace")
    boot_id = text.strip()
    if not boot_id or not all(c.isalnum() or c == "-" for c in boot_id):
        raise HostIOError(
            f"{path} does not hold a boot ID ({text[:40]!r})",
            path=path,
            hint="the checkpoint is keyed by the kernel's boot ID; check --proc-root",
        )
    return boot_id


class Checkpoint:
    """The records of ``state_dir``, in memory and on disk (see the module docstring).

    Not thread-safe: the caller serialises prepares and unprepares.
    """

    def __init__(self, state_dir: str, boot_id: str) -> None:
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, CHECKPOINT_FILE)
        self.boot_id = boot_id
        self._records: dict[str, ClaimRecord] = {}

    def load(self) -> str | None:
        """Reads the file; returns why its records were dropped (another boot, a damaged
        file, which is then kept aside as ``checkpoint.json.damaged``), None otherwise."""
        make_directories(self.state_dir, mode=0o700)
        self._records = {}
        try:
            data = self._read()
        except FileNotFoundError:
            return None
        try:
            boot_id, records = _decode(data)
        except InvalidInputError as exc:
            aside = self.path + ".damaged"
            os.replace(self.path, aside)
            return f"{self.path} is damaged ({exc}); kept as {aside}"
        if boot_id != self.boot_id:
            self._save()
            return (
                f"{self.path} was written under boot {boot_id}, this is boot {self.boot_id}: "
                f"its {len(records)} claim(s) describe bindings a reboot undid"
            )
        self._records = records
        return None

    def __iter__(self) -> Iterator[ClaimRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def get(self, uid: str) -> ClaimRecord | None:
        """The record of the claim with this UID."""
        return self._records.get(uid)

    def put(self, record: ClaimRecord) -> None:
        """Adds or replaces a claim's record, on disk before it returns."""
        previous = self._records.get(record.claim.uid)
        self._records[record.claim.uid] = record
        try:
            self._save()
        except BaseException:
            if previous is None:
                self._records.pop(record.claim.uid, None)
            else:
                self._records[record.claim.uid] = previous
            raise

    def remove(self, uid: str) -> None:
        """Drops a claim's record, on disk before it returns (nothing when absent)."""
        previous = self._records.pop(uid, None)
        if previous is None:
            return
        try:
            self._save()
        except BaseException:
            self._records[uid] = previous
            raise

    def _read(self) -> bytes:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno_codes.ENOENT:
                raise FileNotFoundError(self.path) from None
            why = "it is a symbolic link" if exc.errno == errno_codes.ELOOP else exc.strerror
            raise HostIOError(
                f"cannot open the checkpoint {self.path}: {why}",
                errno=exc.errno,
                path=self.path,
                hint="it must be a regular file, not a link, owned by the plugin's user",
            ) from None
        try:
            return read_regular_fd(fd, self.path, limit=_LIMIT, what="checkpoint")
        finally:
            os.close(fd)

    def _save(self) -> None:
        document = {
            "kind": _KIND,
            "version": _VERSION,
            "bootID": self.boot_id,
            "claims": [_encode_record(r) for r in self._records.values()],
        }
        data = json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"
        atomic_write(self.path, data, mode=0o600)


def _encode_record(record: ClaimRecord) -> dict[str, Any]:
    return {
        "namespace": record.claim.namespace,
        "name": record.claim.name,
        "uid": record.claim.uid,
        "state": record.state,
        "units": [
            {
                "device": u.device,
                "requests": list(u.requests),
                "unit": u.unit_id,
                "group": u.group,
                "functions": list(u.bdfs),
                "cdi": u.cdi_id,
            }
            for u in record.units
        ],
    }


def _decode(data: bytes) -> tuple[str, dict[str, ClaimRecord]]:
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"not JSON: {exc}") from None
    if not isinstance(document, Mapping) or document.get("kind") != _KIND:
        raise InvalidInputError(f"not a {_KIND} document")
    if document.get("version") != _VERSION:
        raise InvalidInputError(f"version {document.get('version')!r}, expected {_VERSION}")
    boot_id = _text(document, "bootID")
    claims = document.get("claims")
    if not isinstance(claims, list):
        raise InvalidInputError("'claims' is not a list")
    records = {}
    for entry in claims:
        record = _decode_record(entry)
        records[record.claim.uid] = record
    return boot_id, records


def _decode_record(entry: object) -> ClaimRecord:
    if not isinstance(entry, Mapping):
        raise InvalidInputError("a claim is not an object")
    state = _text(entry, "state")
    if state not in _STATES:
        raise InvalidInputError(f"claim state {state!r} is not one of {', '.join(_STATES)}")
    units = entry.get("units")
    if not isinstance(units, list):
        raise InvalidInputError("a claim's 'units' is not a list")
    claim = ClaimRef(_text(entry, "namespace"), _text(entry, "name"), _text(entry, "uid"))
    validate_claim_uid(claim.uid)
    return ClaimRecord(claim, state, tuple(_decode_unit(u) for u in units))  # type: ignore[arg-type]


def _decode_unit(entry: object) -> PreparedUnit:
    if not isinstance(entry, Mapping):
        raise InvalidInputError("a unit is not an object")
    group = entry.get("group")
    if not isinstance(group, int) or isinstance(group, bool) or group < 0:
        raise InvalidInputError(f"unit group {group!r} is not a group number")
    bdfs = _texts(entry, "functions")
    for bdf in bdfs:
        Bdf(bdf)  # a BdfError (an InvalidInputError) marks the file damaged
    return PreparedUnit(
        device=_text(entry, "device"),
        requests=_texts(entry, "requests"),
        unit_id=_text(entry, "unit"),
        group=group,
        bdfs=bdfs,
        cdi_id=_text(entry, "cdi", empty_ok=True),
    )


def _text(entry: Mapping[str, Any], key: str, *, empty_ok: bool = False) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not (value or empty_ok):
        raise InvalidInputError(f"{key!r} is not a non-empty string")
    return value


def _texts(entry: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = entry.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInputError(f"{key!r} is not a list of non-empty strings")
    return tuple(value)
