"""Container Device Interface: names, annotations, spec files, the registry, injection and
VFIO spec generation.

A Python implementation of the CDI reference library (``tags.cncf.io/container-device-interface``,
``main`` semantics) that fixes its known flaws: injection is all or nothing and never changes
cached specs, one unreadable directory never hides the others.

Typical use at sandbox creation (the flow this project exists for)::

    from kata_vfio import cdi, oci

    spec = oci.load_oci_spec("config.json")
    _, names = cdi.parse_annotations(oci.annotations(spec))
    result = cdi.Registry().inject(spec, names)          # new dict; raises on any problem
    stripped = cdi.strip_annotations(oci.annotations(result.spec))
    final = oci.with_annotations(result.spec, stripped.annotations)
"""

from __future__ import annotations

from kata_vfio.cdi.annotations import (
    ANNOTATION_PREFIX,
    StripResult,
    annotation_key,
    annotation_value,
    is_inner_annotation,
    parse_annotations,
    strip_annotations,
    update_annotations,
)
from kata_vfio.cdi.edits import OciChanges
from kata_vfio.cdi.encode import dump_spec
from kata_vfio.cdi.generate import (
    HOST_KIND_RULES,
    NAMINGS,
    Naming,
    generate_vfio_spec,
    generate_vfio_specs,
    host_kind,
    write_vfio_spec,
)
from kata_vfio.cdi.hostdev import (
    DevfsLookup,
    DeviceLookup,
    HostDevice,
    HostDeviceTable,
    NotADeviceNodeError,
    lstat_device,
)
from kata_vfio.cdi.inject import InjectionResult, inject_edits, is_applied
from kata_vfio.cdi.loader import load_spec, parse_spec
from kata_vfio.cdi.model import (
    ContainerEdits,
    Device,
    DeviceNode,
    Hook,
    IntelRdt,
    Mount,
    NetDevice,
    Spec,
)
from kata_vfio.cdi.names import (
    QualifiedName,
    is_qualified_name,
    parse_device,
    parse_qualified_name,
    parse_qualifier,
    qualified_name,
    validate_class_name,
    validate_device_name,
    validate_vendor_name,
)
from kata_vfio.cdi.registry import (
    DEFAULT_SPEC_DIRS,
    LoadedSpec,
    RefreshReport,
    RegisteredDevice,
    Registry,
    spec_file_name,
    spec_file_name_for,
    transient_spec_file_name,
    transient_spec_file_name_for,
)
from kata_vfio.cdi.validate import spec_problems, validate_spec
from kata_vfio.cdi.versions import CURRENT_VERSION, KNOWN_VERSIONS, minimum_version

__all__ = [
    "ANNOTATION_PREFIX",
    "CURRENT_VERSION",
    "DEFAULT_SPEC_DIRS",
    "HOST_KIND_RULES",
    "KNOWN_VERSIONS",
    "NAMINGS",
    "ContainerEdits",
    "DevfsLookup",
    "Device",
    "DeviceLookup",
    "DeviceNode",
    "Hook",
    "HostDevice",
    "HostDeviceTable",
    "InjectionResult",
    "IntelRdt",
    "LoadedSpec",
    "Mount",
    "Naming",
    "NetDevice",
    "NotADeviceNodeError",
    "OciChanges",
    "QualifiedName",
    "RefreshReport",
    "RegisteredDevice",
    "Registry",
    "Spec",
    "StripResult",
    "annotation_key",
    "annotation_value",
    "dump_spec",
    "generate_vfio_spec",
    "generate_vfio_specs",
    "host_kind",
    "inject_edits",
    "is_applied",
    "is_inner_annotation",
    "is_qualified_name",
    "load_spec",
    "lstat_device",
    "minimum_version",
    "parse_annotations",
    "parse_device",
    "parse_qualified_name",
    "parse_qualifier",
    "parse_spec",
    "qualified_name",
    "spec_file_name",
    "spec_file_name_for",
    "spec_problems",
    "strip_annotations",
    "transient_spec_file_name",
    "transient_spec_file_name_for",
    "update_annotations",
    "validate_class_name",
    "validate_device_name",
    "validate_spec",
    "validate_vendor_name",
    "write_vfio_spec",
]
