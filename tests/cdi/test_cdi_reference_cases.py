"""Cases taken from the reference library's own test tables (``pkg/cdi/*_test.go``), run
against this implementation with the reference's expected results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kata_vfio.cdi import Registry
from kata_vfio.errors import CdiInjectionError

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
