"""The containerd-style flow of the seed: CDI annotations reach both the sandbox and the
container; devices are injected once (at sandbox creation), the annotations are stripped, and
the container pass neither fails nor injects again."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from cdi_support import oci_spec, pgpu_spec_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kata_vfio import oci
from kata_vfio.cdi import HostDeviceTable, Registry, parse_annotations, strip_annotations
from kata_vfio.errors import CdiInjectionError

# containerd's pod_annotations = ["io.katacontainers.*", "cdi.k8s.io/vfio*"] copies these to
# the sandbox's spec and to every container's spec.
POD_ANNOTATIONS = {
    "cdi.k8s.io/vfio": "nvidia.com/pgpu=14,nvidia.com/pgpu=22",
    "io.katacontainers.config.hypervisor.default_memory": "8192",
}


def sandbox_spec() -> dict[str, Any]:
    return oci_spec(annotations={**POD_ANNOTATIONS, "io.kubernetes.cri.container-type": "sandbox"})


def container_spec() -> dict[str, Any]:
    return oci_spec(
        annotations={**POD_ANNOTATIONS, "io.kubernetes.cri.container-type": "container"}
    )


def sandbox_pass(registry: Registry, spec: dict[str, Any]) -> dict[str, Any]:
    """What the runtime does at sandbox creation: inject the annotated devices, then strip."""
    _, names = parse_annotations(oci.annotations(spec))
    edited = registry.inject(spec, names).spec if names else copy.deepcopy(spec)
    stripped = strip_annotations(oci.annotations(edited))
    return oci.with_annotations(edited, stripped.annotations)


def container_pass(spec: dict[str, Any]) -> dict[str, Any]:
    """At container creation the devices are already in the sandbox: only strip."""
    return oci.with_annotations(spec, strip_annotations(oci.annotations(spec)).annotations)


@pytest.fixture
def registry(spec_dirs: list[Path], write_file: Any, host_dev: HostDeviceTable) -> Registry:
    write_file(spec_dirs[1] / "nvidia.com-pgpu.yaml", pgpu_spec_text(14, 22))
    return Registry(spec_dirs, device_lookup=host_dev)


def vfio_paths(spec: dict[str, Any]) -> list[str]:
    return [d["path"] for d in spec.get("linux", {}).get("devices", [])]


def test_sandbox_gets_the_devices_once_and_loses_the_outer_annotations(registry: Registry) -> None:
    sandbox = sandbox_pass(registry, sandbox_spec())
    assert vfio_paths(sandbox) == ["/dev/vfio/vfio", "/dev/vfio/14", "/dev/vfio/22"]
    assert len(sandbox["linux"]["resources"]["devices"]) == 3
    assert sandbox["annotations"] == {
        "io.katacontainers.config.hypervisor.default_memory": "8192",
        "io.kubernetes.cri.container-type": "sandbox",
    }


def test_the_container_pass_neither_fails_nor_injects(registry: Registry) -> None:
    container = container_pass(container_spec())
    assert "devices" not in container.get("linux", {})
    assert not any(k.startswith("cdi.k8s.io/") for k in container["annotations"])
    # Running the sandbox logic on the stripped container spec finds nothing to inject.
    assert sandbox_pass(registry, container) == container


def test_a_second_sandbox_pass_changes_nothing(registry: Registry) -> None:
    once = sandbox_pass(registry, sandbox_spec())
    assert sandbox_pass(registry, once) == once


def test_without_stripping_a_second_injection_duplicates_rules(registry: Registry) -> None:
    # The bug of the seed: the same annotations injected again.
    spec = sandbox_spec()
    _, names = parse_annotations(oci.annotations(spec))
    first = registry.inject(spec, names).spec
    again = registry.inject(first, names).spec
    assert len(again["linux"]["resources"]["devices"]) == 2 * len(
        first["linux"]["resources"]["devices"]
    )


def test_a_container_pass_against_a_host_without_the_spec_would_fail(tmp_path: Path) -> None:
    # Inside the guest there is no nvidia.com/pgpu spec (Kata PR 12010): stripping is what
    # keeps the container pass from failing there.
    guest = Registry([tmp_path / "guest-cdi"])
    spec = container_spec()
    _, names = parse_annotations(oci.annotations(spec))
    with pytest.raises(CdiInjectionError, match=r"unresolvable CDI devices nvidia\.com/pgpu=14"):
        guest.inject(spec, names)
    assert parse_annotations(oci.annotations(container_pass(spec))) == ([], [])


def test_inner_annotations_added_after_stripping_survive_a_later_strip(registry: Registry) -> None:
    sandbox = sandbox_pass(registry, sandbox_spec())
    container = container_pass(container_spec())
    inner = {"cdi.k8s.io/vfio14": "nvidia.com/gpu=0", "cdi.k8s.io/vfio22": "nvidia.com/gpu=1"}
    for_guest = oci.with_annotations(container, {**oci.annotations(container), **inner})
    again = strip_annotations(oci.annotations(for_guest), keep_inner=True)
    assert {k: v for k, v in again.annotations.items() if k.startswith("cdi.k8s.io/")} == inner
    assert again.removed == {}
    assert vfio_paths(sandbox)[1:] == ["/dev/vfio/14", "/dev/vfio/22"]


def test_a_failed_sandbox_pass_leaves_the_spec_as_it_was(registry: Registry) -> None:
    spec = sandbox_spec()
    spec["annotations"]["cdi.k8s.io/extra"] = "nvidia.com/pgpu=99"
    before = copy.deepcopy(spec)
    with pytest.raises(CdiInjectionError) as info:
        sandbox_pass(registry, spec)
    assert info.value.unresolved == ("nvidia.com/pgpu=99",)
    assert spec == before


GROUPS = st.lists(st.sampled_from(["14", "22"]), max_size=4)
OTHER = st.dictionaries(
    st.sampled_from(["a", "io.x/y", "cdi.k8s.io.not"]), st.text(max_size=5), max_size=3
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(GROUPS, GROUPS, OTHER)
def test_inject_then_strip_is_idempotent(
    registry: Registry, first: list[str], second: list[str], other: dict[str, str]
) -> None:
    annotations = dict(other)
    if first:
        annotations["cdi.k8s.io/a"] = ",".join(f"nvidia.com/pgpu={g}" for g in first)
    if second:
        annotations["cdi.k8s.io/vfio"] = ",".join(f"nvidia.com/pgpu={g}" for g in second)
    spec = oci_spec(annotations=annotations)
    once = sandbox_pass(registry, spec)
    assert sandbox_pass(registry, once) == once
    assert oci.annotations(once) == other
    expected = {f"/dev/vfio/{g}" for g in first + second}
    assert set(vfio_paths(once)) == (expected | {"/dev/vfio/vfio"} if expected else set())
