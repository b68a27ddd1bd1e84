"""The exception hierarchy of kata_vfio, defined once.

Every error the package raises derives from :class:`KataVfioError` and carries an optional
one-line ``hint`` on what to do. OS failures (:class:`HostIOError`) keep ``errno`` and the path
(``filename``). The Rust core raises these same classes.
"""

from __future__ import annotations

__all__ = [
    "BdfError",
    "BindError",
    "CdiError",
    "CdiInjectionError",
    "CdiNameError",
    "CdiSpecError",
    "ConfigError",
    "DeviceNotFoundError",
    "HostIOError",
    "InvalidInputError",
    "KataVfioError",
    "KubernetesError",
    "NotAssignableError",
    "OciSpecError",
    "PlanError",
    "QemuError",
    "QemuStartError",
    "QmpError",
    "VfioError",
]


class KataVfioError(Exception):
    """Base of every error raised by kata_vfio."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidInputError(KataVfioError, ValueError):
    """An outside value (argument, annotation, file content) is malformed."""


class BdfError(InvalidInputError):
    """A PCI address does not parse."""


class DeviceNotFoundError(KataVfioError, LookupError):
    """A device, group or node asked for is not on this host."""


class HostIOError(KataVfioError, OSError):
    """A system call failed; ``errno`` and ``filename`` say which and where."""

    def __init__(
        self,
        message: str,
        *,
        errno: int | None = None,
        path: str | None = None,
        hint: str | None = None,
    ) -> None:
        KataVfioError.__init__(self, message, hint=hint)
        # OSError's own attributes, so callers can use the familiar names.
        self.errno = errno
        self.filename = path
        self.strerror = message
        self._path = path

    @property
    def path(self) -> str | None:
        """The path the failing call was made on."""
        return self._path

    def __str__(self) -> str:
        return self.message


class KubernetesError(KataVfioError):
    """A kubelet API (device plugin registration, Pod Resources) failed or refused, or the
    Kubernetes extra is not installed; the message names the socket or the call."""


class NotAssignableError(KataVfioError):
    """A device or IOMMU group cannot be passed through as it stands."""


class BindError(KataVfioError):
    """Moving a device between drivers failed (the previous state was restored)."""


class VfioError(HostIOError):
    """A VFIO or iommufd ioctl failed."""


class ConfigError(InvalidInputError):
    """A Kata configuration file or override is invalid."""


class PlanError(KataVfioError):
    """A sandbox or container plan cannot be made from the given inputs."""


class QemuError(KataVfioError):
    """QEMU failed to start or exited unexpectedly."""


class QemuStartError(QemuError):
    """QEMU exited or did not answer QMP at start; keeps its exit code, argv and stderr."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None,
        argv: list[str],
        stderr: str,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.argv = argv
        self.stderr = stderr


class QmpError(QemuError):
    """A QMP command failed or timed out."""


class CdiError(KataVfioError):
    """Base of the Container Device Interface errors."""


class CdiNameError(CdiError, InvalidInputError):
    """A qualified CDI device name, vendor, class or annotation is malformed."""


class CdiSpecError(CdiError, InvalidInputError):
    """A CDI spec file is invalid; the message names the file and the field.

    ``problems`` lists every problem found (the message summarises them).
    """

    def __init__(
        self, message: str, *, problems: tuple[str, ...] = (), hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or (message,)


class CdiInjectionError(CdiError):
    """CDI devices could not be injected; the OCI spec was left unchanged.

    ``unresolved`` names every requested device that no spec provides.
    """

    def __init__(
        self, message: str, *, unresolved: tuple[str, ...] = (), hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.unresolved = unresolved


class OciSpecError(InvalidInputError):
    """An OCI runtime spec (a bundle's config.json) is malformed; the message names the field."""
