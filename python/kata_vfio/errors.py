"""The exception hierarchy of kata_vfio, defined once.

Every error the package raises derives from :class:`KataVfioError` and carries an optional
one-line ``hint`` on what to do. OS failures (:class:`HostIOError` and below) are
:class:`OSError` s that keep ``errno`` and the path (``filename``). The Rust core raises these
same classes: its bindings import each one by name and convert every core error in one place.

.. code-block:: text

    KataVfioError
     +-- InvalidInputError (ValueError)       bad input: exit 2 in the CLI
     |    +-- BdfError                        a PCI address that does not parse
     |    +-- ConfigError                     a Kata configuration file or override
     |    +-- OciSpecError                    an OCI runtime spec (config.json)
     |    +-- JsonValueError                  JSON that is not plain, finite JSON
     |    |    +-- DuplicateKeyError          a JSON object repeating a key
     |    +-- CdiNameError (CdiError)         a CDI device name, vendor or class
     |    +-- CdiSpecError (CdiError)         a CDI spec file
     |    +-- UsageError                      command-line usage (kata_vfio.cli)
     +-- DeviceNotFoundError (LookupError)    a device, group or node not on this host
     +-- HostIOError (OSError)                a system call failed: errno, filename
     |    +-- VfioError                       a VFIO or iommufd ioctl or node open
     |    +-- BindError                       binding, unbinding or restoring a driver
     |    +-- NotADeviceNodeError             a CDI host path that is not a device node
     +-- HandleError (ValueError)             a VFIO handle used after close()
     +-- NotAssignableError                   a device or group that cannot be passed through
     +-- PlanError                            a sandbox or container plan
     +-- KubernetesError                      a kubelet API call failed or was refused
     |    +-- ClaimError                      a ResourceClaim cannot be read or used
     |         +-- ClaimGoneError             ... it no longer exists (or has another UID)
     +-- QemuError                            QEMU failed
     |    +-- QemuStartError                  ... to start (exit code, argv, stderr)
     |    +-- QmpError                        ... a QMP command
     +-- CdiError                             the Container Device Interface
          +-- CdiInjectionError               injection into an OCI spec
          +-- NodeCompletionError             a CDI device node the host cannot complete

``JsonValueError`` and ``DuplicateKeyError`` (``kata_vfio._json``, re-exported by
:mod:`kata_vfio.oci`), ``UsageError`` (:mod:`kata_vfio.cli`),
``NotADeviceNodeError`` and ``NodeCompletionError`` (:mod:`kata_vfio.cdi.hostdev`) live
beside the code that raises them; everything else is defined here.
"""

from __future__ import annotations

__all__ = [
    "BdfError",
    "BindError",
    "CdiError",
    "CdiInjectionError",
    "CdiNameError",
    "CdiSpecError",
    "ClaimError",
    "ClaimGoneError",
    "ConfigError",
    "DeviceNotFoundError",
    "HandleError",
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
    """Base of every error raised by kata_vfio.

    ``remedies`` names the steps of this tool that would help, as data (``force``,
    ``restore``, ``check-iommu``, ``bind-group``, ``name-driver``, ``state-dir``,
    ``list-devices``): the Rust
    core sets them, :func:`kata_vfio.host.render.remedy_text` words them, and the public
    functions that raise such an error have already added those words to ``hint``.
    """

    def __init__(
        self, message: str, *, hint: str | None = None, remedies: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.remedies = tuple(remedies)

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
        remedies: tuple[str, ...] = (),
    ) -> None:
        KataVfioError.__init__(self, message, hint=hint, remedies=remedies)
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


class ClaimError(KubernetesError):
    """A ResourceClaim cannot be read from the API server, or is not allocated; the message
    names the claim (``namespace/name``, UID)."""


class ClaimGoneError(ClaimError):
    """A ResourceClaim no longer exists: the API server answers 404, or the name now belongs
    to a claim with another UID."""


class NotAssignableError(KataVfioError):
    """A device or IOMMU group cannot be passed through as it stands."""


class BindError(HostIOError):
    """Binding, unbinding or restoring a driver failed or was refused.

    ``errno`` is the kernel's answer when a sysfs write failed (``EBUSY``, ``ENODEV``...),
    ``None`` for a refusal (a device in use, a group held open, a journal that does not
    match the device). A failed bind has rolled back what it touched (the message says what).
    """


class VfioError(HostIOError):
    """A VFIO or iommufd ioctl failed."""


class HandleError(KataVfioError, ValueError):
    """A VFIO handle was used after ``close()``, or detached while another thread used it
    (Python's own files raise :class:`ValueError` for a closed file)."""


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
