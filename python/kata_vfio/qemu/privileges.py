"""What QEMU runs with: the user it drops to, its system call filter, its environment.

A guest that escapes into QEMU holds whatever QEMU holds, so QEMU gets as little as the VM
allows:

* **a user** (:class:`QemuUser`): QEMU opens what it needs as root, then drops to this user
  (``-run-with user=`` on QEMU 9.1 and later, ``-runas`` before). A syscall filter that denies
  privilege changes (``-sandbox ...,elevateprivileges=deny``) would kill QEMU at that drop, so
  then the launcher starts QEMU as the user from the beginning (:func:`drop_plan` says which);
* **a syscall filter**: Kata's ``seccompsandbox`` setting as QEMU's ``-sandbox`` option,
  checked key by key (:func:`parse_seccomp_sandbox`);
* **an environment** of its own (:data:`MINIMAL_ENV`), not the caller's.

VFIO devices reach an unprivileged QEMU as file descriptors opened here
(:func:`kata_vfio.qemu.fds.open_for_qemu`): QEMU takes a cdev (``vfio-pci,fd=``) only with an
iommufd backend; a legacy group (``/dev/vfio/<group>``) is always opened by QEMU itself, so it
works only while QEMU is still root (cold-plugged, with ``-run-with``).
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kata_vfio._echo import echo
from kata_vfio._numbers import decimal_digits
from kata_vfio.errors import InvalidInputError, QemuError
from kata_vfio.qemu.argv import QemuOpts

__all__ = [
    "MINIMAL_ENV",
    "RUN_WITH_USER_SINCE",
    "DropPlan",
    "QemuUser",
    "denies_privilege_change",
    "drop_plan",
    "parse_qemu_version",
    "parse_seccomp_sandbox",
    "qemu_version",
    "resolve_user",
]

MINIMAL_ENV: dict[str, str] = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
"""QEMU's whole environment: a fixed ``PATH`` (for the helpers it may run), nothing of the
caller's (no ``LD_PRELOAD``, no proxy or locale settings that change what it does)."""

RUN_WITH_USER_SINCE = (9, 1)
"""The first QEMU with ``-run-with user=`` (``-runas`` was deprecated then)."""

# QEMU's -sandbox keys and the values each takes (qemu-options.hx, qemu-seccomp.c).
_SANDBOX_KEYS: dict[str, tuple[str, ...]] = {
    "obsolete": ("allow", "deny"),
    "elevateprivileges": ("allow", "deny", "children"),
    "spawn": ("allow", "deny"),
    "resourcecontrol": ("allow", "deny"),
}
_SANDBOX_HINT = (
    "write on|off then key=value items, e.g. "
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
)
# A user name QEMU and getpwnam() both take; nothing that QEMU's option syntax would split.
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")
_MAX_ID = (1 << 32) - 2  # (uid_t)-1 means "unchanged"
_VERSION = re.compile(r"version ([0-9]{1,4})\.([0-9]{1,4})(?:\.([0-9]{1,4}))?")


@dataclass(frozen=True)
class QemuUser:
    """The user QEMU drops to: ``uid``, ``gid``, the supplementary ``groups`` it gets, and
    its ``name`` when it was named (QEMU then takes the user's groups with ``initgroups``)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str | None = None

    @property
    def qemu_value(self) -> str:
        """How QEMU's ``-run-with user=`` / ``-runas`` names it."""
        return self.name if self.name is not None else f"{self.uid}:{self.gid}"


def resolve_user(text: str) -> QemuUser:
    """The user named ``NAME``, ``UID`` or ``UID:GID`` (looked up in the user database).

    Refuses root (that would keep every privilege) and anything QEMU's option syntax could
    misread. Raises :class:`InvalidInputError` naming the input.
    """
    uid_text, sep, gid_text = text.partition(":")
    if sep:
        uid = decimal_digits(uid_text, max_value=_MAX_ID)
        gid = decimal_digits(gid_text, max_value=_MAX_ID)
        if uid is None or gid is None:
            raise InvalidInputError(
                f"QEMU user {echo(text)} is not UID:GID", hint="write a user name or UID:GID"
            )
        user = QemuUser(uid=uid, gid=gid, groups=(gid,))
    elif text.isascii() and text.isdigit():
        uid = decimal_digits(text, max_value=_MAX_ID)
        if uid is None:
            raise InvalidInputError(f"QEMU user {echo(text)} is out of range")
        entry = _lookup(lambda: pwd.getpwuid(uid), text)
        user = QemuUser(uid=uid, gid=entry.pw_gid, groups=(entry.pw_gid,))
    else:
        if not _USER_NAME.match(text):
            raise InvalidInputError(
                f"QEMU user {echo(text)} is not a valid user name",
                hint="write a user name (letters, digits, '_', '-', '.') or UID:GID",
            )
        entry = _lookup(lambda: pwd.getpwnam(text), text)
        groups = tuple(sorted(set(os.getgrouplist(text, entry.pw_gid))))
        user = QemuUser(uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, name=text)
    if user.uid == 0 or 0 in (user.gid, *user.groups):
        raise InvalidInputError(
            f"QEMU user {echo(text)} is root or in root's group: QEMU would keep its privileges",
            hint="name an unprivileged user made for QEMU (e.g. kata or qemu)",
        )
    return user


def _lookup(find: Callable[[], pwd.struct_passwd], text: str) -> pwd.struct_passwd:
    try:
        return find()
    except KeyError:
        raise InvalidInputError(
            f"QEMU user {echo(text)} does not exist on this host",
            hint="create it (useradd --system --no-create-home kata) or give UID:GID",
        ) from None


def parse_seccomp_sandbox(text: str, *, where: str = "seccompsandbox") -> QemuOpts | None:
    """Kata's ``seccompsandbox`` value as QEMU's ``-sandbox`` option; None when empty (no
    filter, as in Kata). Every item is checked: ``on`` or ``off`` first, then known
    ``key=value`` pairs once each. Raises :class:`InvalidInputError` naming ``where``."""
    if not text.strip():
        return None
    head, *items = (item.strip() for item in text.split(","))
    enable = head.removeprefix("enable=")
    if enable not in ("on", "off"):
        raise InvalidInputError(
            f"{where} = {echo(text)}: the first item must be on or off, not {echo(head)}",
            hint=_SANDBOX_HINT,
        )
    props: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        allowed = _SANDBOX_KEYS.get(key)
        if not sep or allowed is None or value not in allowed:
            known = "; ".join(f"{k}={'|'.join(v)}" for k, v in _SANDBOX_KEYS.items())
            raise InvalidInputError(
                f"{where} = {echo(text)}: {echo(item)} is not a sandbox setting",
                hint=f"known settings: {known}",
            )
        if key in dict(props):
            raise InvalidInputError(
                f"{where} = {echo(text)}: {key} is given twice", hint=_SANDBOX_HINT
            )
        props.append((key, value))
    return QemuOpts.of(enable, *props)


def denies_privilege_change(sandbox: QemuOpts | None) -> bool:
    """True when the filter kills a process that changes its user (``elevateprivileges=deny``
    or ``children``, as QEMU's own setuid at ``-run-with user=`` would)."""
    return (
        sandbox is not None
        and sandbox.head == "on"
        and sandbox.get("elevateprivileges") in ("deny", "children")
    )


DropMode = Literal["run-with", "runas", "exec"]


@dataclass(frozen=True)
class DropPlan:
    """How QEMU gets to ``user``: ``run-with``/``runas`` (QEMU drops after opening what it
    needs; ``option`` is the flag and its value) or ``exec`` (started as the user, because
    its syscall filter forbids the drop)."""

    user: QemuUser
    mode: DropMode
    option: tuple[str, str] | None


def drop_plan(
    user: QemuUser, *, version: tuple[int, int] | None, sandbox: QemuOpts | None
) -> DropPlan:
    """The way to run QEMU ``version`` as ``user`` under the ``sandbox`` filter (pure; the
    version may be unknown only when the filter forbids QEMU's own drop)."""
    if denies_privilege_change(sandbox):
        return DropPlan(user, "exec", None)
    if version is None:
        raise QemuError("the QEMU version is needed to choose how it drops its privileges")
    if version >= RUN_WITH_USER_SINCE:
        return DropPlan(user, "run-with", ("-run-with", f"user={user.qemu_value}"))
    return DropPlan(user, "runas", ("-runas", user.qemu_value))


def parse_qemu_version(text: str) -> tuple[int, int] | None:
    """``(major, minor)`` from ``qemu-system-* --version`` output, None when absent."""
    match = _VERSION.search(text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def qemu_version(binary: str, *, timeout: float = 10.0) -> tuple[int, int]:
    """Asks ``binary --version`` (minimal environment). Raises :class:`QemuError`."""
    try:
        done = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            env=MINIMAL_ENV,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QemuError(
            f"cannot ask {binary} for its version: {exc}",
            hint="install qemu-system-x86 or set the hypervisor path in the configuration",
        ) from exc
    output = done.stdout.decode("utf-8", "replace")
    version = parse_qemu_version(output)
    if done.returncode != 0 or version is None:
        raise QemuError(
            f"{binary} --version did not say which QEMU it is "
            f"(status {done.returncode}): {echo(output.strip())}",
            hint="the hypervisor path must name a qemu-system-* binary",
        )
    return version
