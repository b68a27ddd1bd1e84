"""Cases taken from the reference library's own test tables (``pkg/cdi/*_test.go``), run
against this implementation with the reference's expected results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kata_vfio.cdi import (
    ContainerEdits,
    Device,
    DeviceNode,
    HostDeviceTable,
    Registry,
    Spec,
    inject_edits,
    parse_qualified_name,
    spec_problems,
)
from kata_vfio.cdi.goquote import go_quote
from kata_vfio.errors import CdiInjectionError, CdiNameError

VENDOR1 = """
cdiVersion: "0.3.0"
kind:       "vendor1.com/device"
containerEdits:
  env:
  - VENDOR1_SPEC_VAR1=VAL1
devices:
  - name: "dev1"
    containerEdits:
      env:
      - "VENDOR1_VAR1=VAL1"
      deviceNodes:
      - path: "/dev/vendor1-dev1"
        type: b
        major: 10
        minor: 1
"""

_RULE = {"allow": True, "type": "b", "major": 10, "minor": 1, "access": "rwm"}
_NODE = {"path": "/dev/vendor1-dev1", "type": "b", "major": 10, "minor": 1}


@pytest.fixture
def vendor1(tmp_path: Path) -> Registry:
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    (etc / "vendor1.yaml").write_text(VENDOR1)
    return Registry([etc, run])


@pytest.mark.parametrize(
    ("oci", "expected"),
    [
        # "empty OCI Spec, inject one device": the reference edits any spec object.
        (
            {},
            {
                "process": {"env": ["VENDOR1_SPEC_VAR1=VAL1", "VENDOR1_VAR1=VAL1"]},
                "linux": {"devices": [_NODE], "resources": {"devices": [_RULE]}},
            },
        ),
        # "non-empty OCI Spec, inject one device"
        (
            {
                "process": {"env": ["ORIG_VAR1=VAL1", "ORIG_VAR2=VAL2"]},
                "linux": {"devices": [{"path": "/dev/null"}, {"path": "/dev/zero"}]},
            },
            {
                "process": {
                    "env": [
                        "ORIG_VAR1=VAL1",
                        "ORIG_VAR2=VAL2",
                        "VENDOR1_SPEC_VAR1=VAL1",
                        "VENDOR1_VAR1=VAL1",
                    ]
                },
                "linux": {
                    "devices": [{"path": "/dev/null"}, {"path": "/dev/zero"}, _NODE],
                    "resources": {"devices": [_RULE]},
                },
            },
        ),
    ],
)
def test_inject_device(vendor1: Registry, oci: dict[str, Any], expected: dict[str, Any]) -> None:
    # The node is minimally specified (type and major): no host lookup is needed or made.
    result = vendor1.inject(oci, ["vendor1.com/device=dev1"])
    assert result.spec == expected


def test_inject_non_existent_device(vendor1: Registry) -> None:
    oci: dict[str, Any] = {}
    with pytest.raises(CdiInjectionError) as info:
        vendor1.inject(oci, ["vendor1.com/device=dev2"])
    assert str(info.value) == "unresolvable CDI devices vendor1.com/device=dev2"
    assert info.value.unresolved == ("vendor1.com/device=dev2",)
    assert oci == {}


@pytest.mark.parametrize(
    ("version", "error"),
    [
        # specs-go TestValidateVersion: the error texts, Go's %q quoting included.
        ("1.1.0", None),
        ("v1.1.0", None),
        ("0.3.0", None),
        ("0.1.0", "the spec version must be at least v0.3.0"),
        ("v0.2.0", "the spec version must be at least v0.3.0"),
        ("1.2.0", 'invalid version "1.2.0"'),
        ("not-a-version", 'invalid version "not-a-version"'),
    ],
)
def test_validate_version_texts(version: str, error: str | None) -> None:
    spec = Spec(version, "vendor.com/class", (Device("d", ContainerEdits(env=("A=1",))),))
    problems = spec_problems(spec)
    if error is None:
        assert problems == ()
    else:
        assert problems == (f"cdiVersion: {error}",)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("vendor.com/class", 'unqualified device "vendor.com/class", missing vendor'),
        ("/dev/null", 'unqualified device "/dev/null", missing vendor'),
        (
            "_invalid.com/class=dev",
            'invalid device "_invalid.com/class=dev": '
            'invalid vendor. "_invalid.com", should start with letter',
        ),
        (
            "v.com/cl@ss=dev",
            "invalid device \"v.com/cl@ss=dev\": invalid class. invalid character '@' "
            'in name "cl@ss"',
        ),
    ],
)
def test_parser_error_texts(name: str, error: str) -> None:
    with pytest.raises(CdiNameError) as info:
        parse_qualified_name(name)
    assert str(info.value) == error


def test_host_lookup_failure_text() -> None:
    # fillMissingInfo wraps the lstat error: 'lstat PATH: no such file or directory'.
    edits = ContainerEdits(device_nodes=(DeviceNode("/dev/gone"),))
    with pytest.raises(CdiInjectionError) as info:
        inject_edits({}, [edits], lookup=HostDeviceTable({}))
    assert str(info.value) == (
        'failed to inject devices: failed to stat CDI host device "/dev/gone": '
        "lstat /dev/gone: no such file or directory"
    )


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("plain", '"plain"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a\\b", '"a\\\\b"'),
        ("tab\tnl\n", '"tab\\tnl\\n"'),
        ("\x01\x7f", '"\\x01\\x7f"'),
        ("zero\u200bwidth", '"zero\\u200bwidth"'),
        ("gpu-é", '"gpu-é"'),
    ],
)
def test_go_quote_is_strconv_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted
