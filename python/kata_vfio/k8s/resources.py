"""Resources the node agent offers: a Kubernetes extended resource name and the PCI functions
it takes (``--resource nvidia.com/pgpu=10de:*``).

A resource name is both a Kubernetes extended resource name (``domain/name``, the domain a
lower-case DNS subdomain outside ``kubernetes.io``, the name at most 63 characters) and the
CDI kind of the spec that describes its devices, so it must satisfy both rule sets; the kubelet
then builds ``<resource>=<device id>`` names that resolve in that spec.

A selector is a comma-separated list of ``VENDOR:DEVICE`` pairs in hex, ``*`` for any device of
the vendor (``10de:2330,10de:2331``, ``15b3:*``). Without ``--resource``, the agent offers every
NVIDIA display or 3D controller as ``nvidia.com/pgpu`` (NVIDIA's own name for passthrough GPUs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from kata_vfio._core import PciDevice
from kata_vfio._echo import echo
from kata_vfio.cdi.names import validate_class_name, validate_vendor_name
from kata_vfio.errors import CdiNameError, InvalidInputError

__all__ = [
    "DEFAULT_RESOURCE",
    "PciSelector",
    "ResourceSpec",
    "default_resources",
    "parse_resource",
    "parse_resources",
]

DEFAULT_RESOURCE = "nvidia.com/pgpu"

_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\Z")
_QUALIFIED_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?\Z")
_HEX = re.compile(r"[0-9a-fA-F]{1,4}\Z")
_RESOURCE_HINT = (
    "write --resource vendor.com/name=VENDOR:DEVICE[,VENDOR:DEVICE...] in hex, '*' for any "
    "device: nvidia.com/pgpu=10de:*"
)


@dataclass(frozen=True, slots=True)
class PciSelector:
    """Functions of ``vendor`` (and ``device``, None for any); ``class_prefix`` (the top
    ``class_bits`` bits of the class code) narrows it further when set."""

    vendor: int
    device: int | None = None
    class_prefix: int | None = None
    class_bits: int = 8

    def matches(self, function: PciDevice) -> bool:
        """Whether ``function`` is one this selector takes."""
        if function.vendor != self.vendor:
            return False
        if self.device is not None and function.device != self.device:
            return False
        if self.class_prefix is None:
            return True
        return function.class_code >> (24 - self.class_bits) == self.class_prefix

    def __str__(self) -> str:
        device = "*" if self.device is None else f"{self.device:04x}"
        text = f"{self.vendor:04x}:{device}"
        if self.class_prefix is not None:
            width = self.class_bits // 4
            text += f" (class {self.class_prefix:0{width}x})"
        return text


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """One resource: its name (``nvidia.com/pgpu``) and the selectors of its functions."""

    name: str
    selectors: tuple[PciSelector, ...]

    @property
    def vendor(self) -> str:
        """The part before ``/`` (the CDI vendor)."""
        return self.name.partition("/")[0]

    @property
    def cls(self) -> str:
        """The part after ``/`` (the CDI class)."""
        return self.name.partition("/")[2]

    @property
    def env_name(self) -> str:
        """``PCI_RESOURCE_NVIDIA_COM_PGPU``: the variable ``Allocate`` sets to the BDFs (the
        name KubeVirt's PCI plugin uses, so guests' tooling finds it)."""
        return "PCI_RESOURCE_" + re.sub(r"[^A-Z0-9]", "_", self.name.upper())

    def matches(self, function: PciDevice) -> bool:
        """Whether any selector takes ``function``."""
        return any(s.matches(function) for s in self.selectors)

    def __str__(self) -> str:
        return f"{self.name}={','.join(str(s) for s in self.selectors)}"


def default_resources() -> tuple[ResourceSpec, ...]:
    """``nvidia.com/pgpu``: every NVIDIA function of class 0x03 (VGA and 3D controllers)."""
    return (ResourceSpec(DEFAULT_RESOURCE, (PciSelector(0x10DE, None, 0x03, 8),)),)


def parse_resources(texts: Iterable[str]) -> tuple[ResourceSpec, ...]:
    """Parses every ``--resource`` value; the default resource when there are none. Raises
    :class:`InvalidInputError` for a malformed one or a name given twice."""
    specs = tuple(parse_resource(text) for text in texts)
    if not specs:
        return default_resources()
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise InvalidInputError(
                f"resource {spec.name} is given twice",
                hint="list every selector of a resource in one --resource, comma-separated",
            )
        seen.add(spec.name)
    return specs


def parse_resource(text: str) -> ResourceSpec:
    """Parses ``NAME=SELECTOR`` (see the module docstring)."""
    name, sep, selector_text = text.partition("=")
    if not sep or not selector_text:
        raise InvalidInputError(
            f"invalid --resource {echo(text)}: no '=SELECTOR'", hint=_RESOURCE_HINT
        )
    problem = resource_name_problem(name)
    if problem is not None:
        raise InvalidInputError(
            f"invalid resource name {echo(name)}: {problem}", hint=_RESOURCE_HINT
        )
    selectors = []
    for part in selector_text.split(","):
        selector = _parse_selector(part)
        if selector is None:
            raise InvalidInputError(
                f"invalid selector {echo(part)} in --resource {echo(text)}: "
                "not VENDOR:DEVICE in hex",
                hint=_RESOURCE_HINT,
            )
        if selector not in selectors:
            selectors.append(selector)
    return ResourceSpec(name, tuple(selectors))


def resource_name_problem(name: str) -> str | None:
    """What keeps ``name`` from being both an extended resource name and a CDI kind, or None."""
    domain, sep, short = name.partition("/")
    if not sep:
        return "it needs a domain, like vendor.com/name"
    if len(domain) > 253 or not _DNS_SUBDOMAIN.match(domain):
        return f"the domain {echo(domain)} is not a lower-case DNS name"
    if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
        return "kubernetes.io names are reserved for Kubernetes itself"
    if len(short) > 63 or not _QUALIFIED_NAME.match(short):
        return (
            f"the name {echo(short)} must be 1-63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    try:
        validate_vendor_name(domain)
        validate_class_name(short)
    except CdiNameError as exc:
        return f"it is also the CDI kind, and {exc}"
    return None


def _parse_selector(text: str) -> PciSelector | None:
    vendor_text, sep, device_text = text.strip().partition(":")
    if not sep or not _HEX.match(vendor_text):
        return None
    if device_text == "*":
        return PciSelector(int(vendor_text, 16))
    if not _HEX.match(device_text):
        return None
    return PciSelector(int(vendor_text, 16), int(device_text, 16))
