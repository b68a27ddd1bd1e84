"""CDI annotations: keys, values, parsing all or nothing, and stripping."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kata_vfio.cdi import (
    ANNOTATION_PREFIX,
    annotation_key,
    annotation_value,
    is_inner_annotation,
    parse_annotations,
    strip_annotations,
    update_annotations,
)
from kata_vfio.errors import CdiNameError


def test_annotation_key_joins_plugin_and_id() -> None:
    assert annotation_key("vendor.gpu", "dev/1") == "cdi.k8s.io/vendor.gpu_dev_1"
    # 63 characters after the prefix is the limit; the prefix does not count.
    name = "p" * 31 + "_" + "d" * 31
    assert annotation_key("p" * 31, "d" * 31) == ANNOTATION_PREFIX + name
    with pytest.raises(CdiNameError, match="too long"):
        annotation_key("p" * 31, "d" * 32)


@pytest.mark.parametrize(
    ("plugin", "device_id", "problem"),
    [
        ("", "x", "invalid plugin name, empty"),
        ("p", "", "invalid deviceID, empty"),
        ("-p", "x", "first '-' should be alphanumeric"),
        ("p", "x-", "last '-' should be alphanumeric"),
        ("p", "a:b", "invalid character ':'"),
        ("p", "a=b", "invalid character '='"),
    ],
)
def test_annotation_key_rules(plugin: str, device_id: str, problem: str) -> None:
    with pytest.raises(CdiNameError, match=problem):
        annotation_key(plugin, device_id)


def test_annotation_value_checks_every_name_and_keeps_order() -> None:
    assert (
        annotation_value(["b.com/c=2", "a.com/c=1", "b.com/c=2"]) == "b.com/c=2,a.com/c=1,b.com/c=2"
    )
    assert annotation_value([]) == ""
    with pytest.raises(CdiNameError):
        annotation_value(["a.com/c=1", "bad"])


def test_update_annotations_adds_one_key_and_never_changes_the_input() -> None:
    original = {"other": "x"}
    updated = update_annotations(original, "vendor.gpu", "claim1", ["vendor.com/gpu=0"])
    assert updated == {"other": "x", "cdi.k8s.io/vendor.gpu_claim1": "vendor.com/gpu=0"}
    assert original == {"other": "x"}
    assert update_annotations(None, "p", "1", ["a.com/b=c"]) == {"cdi.k8s.io/p_1": "a.com/b=c"}


def test_update_annotations_refuses_a_used_key_and_bad_input() -> None:
    current = {"cdi.k8s.io/p_1": "a.com/b=c"}
    with pytest.raises(CdiNameError, match=r"key \"cdi\.k8s\.io/p_1\" used"):
        update_annotations(current, "p", "1", ["a.com/b=d"])
    with pytest.raises(CdiNameError, match="CDI annotation failed: invalid plugin name"):
        update_annotations(current, "", "1", ["a.com/b=d"])
    with pytest.raises(CdiNameError, match="CDI annotation failed"):
        update_annotations(current, "p", "2", ["not-a-name"])
    assert current == {"cdi.k8s.io/p_1": "a.com/b=c"}


def test_parse_annotations_reads_every_prefixed_key_in_sorted_order() -> None:
    annotations = {
        "io.katacontainers.x": "ignored",
        "cdi.k8s.io/vfio2": "nvidia.com/gpu=1",
        "cdi.k8s.io/vfio": "nvidia.com/pgpu=0,nvidia.com/pgpu=1",
        "cdi.k8s.io/vfio1": "nvidia.com/gpu=0",
    }
    keys, devices = parse_annotations(annotations)
    assert keys == ["cdi.k8s.io/vfio", "cdi.k8s.io/vfio1", "cdi.k8s.io/vfio2"]
    assert devices == [
        "nvidia.com/pgpu=0",
        "nvidia.com/pgpu=1",
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=1",
    ]


def test_parse_annotations_keeps_repeats_like_the_reference() -> None:
    _, devices = parse_annotations({"cdi.k8s.io/a": "v.com/c=0", "cdi.k8s.io/b": "v.com/c=0"})
    assert devices == ["v.com/c=0", "v.com/c=0"]


@pytest.mark.parametrize(
    "value",
    ["", "a.com/b=c,", "a.com/b=c, d.com/e=f", " a.com/b=c", "a.com/b=c,,x.com/y=z", "nope"],
)
def test_parse_annotations_is_all_or_nothing(value: str) -> None:
    with pytest.raises(CdiNameError, match="invalid CDI device name") as info:
        parse_annotations({"cdi.k8s.io/good": "a.com/b=c", "cdi.k8s.io/vfio": value})
    assert "cdi.k8s.io/vfio" in str(info.value)


def test_parse_annotations_of_nothing() -> None:
    assert parse_annotations(None) == ([], [])
    assert parse_annotations({}) == ([], [])
    assert parse_annotations({"x": "not a device"}) == ([], [])


def test_parse_annotations_refuses_non_string_values() -> None:
    with pytest.raises(CdiNameError, match="must be a string"):
        parse_annotations({"cdi.k8s.io/x": 5})  # type: ignore[dict-item]


def test_strip_removes_every_cdi_key_and_keeps_the_rest_in_order() -> None:
    annotations = {
        "io.kubernetes.cri.container-type": "sandbox",
        "cdi.k8s.io/vfio": "nvidia.com/pgpu=0",
        "io.katacontainers.config.hypervisor.default_memory": "4096",
        "cdi.k8s.io/vfio71": "nvidia.com/gpu=0",
        "cdi.k8s.io.lookalike": "kept",
    }
    result = strip_annotations(annotations)
    assert list(result.annotations) == [
        "io.kubernetes.cri.container-type",
        "io.katacontainers.config.hypervisor.default_memory",
        "cdi.k8s.io.lookalike",
    ]
    assert result.removed == {
        "cdi.k8s.io/vfio": "nvidia.com/pgpu=0",
        "cdi.k8s.io/vfio71": "nvidia.com/gpu=0",
    }
    assert "cdi.k8s.io/vfio" in annotations  # input untouched


def test_strip_keep_inner_keeps_only_the_runtimes_own_keys() -> None:
    annotations = {
        "cdi.k8s.io/vfio": "nvidia.com/pgpu=0",
        "cdi.k8s.io/vfio12": "nvidia.com/gpu=0",
        "cdi.k8s.io/vfio3": "nvidia.com/gpu=1",
        "cdi.k8s.io/vfiox": "nvidia.com/pgpu=1",
        "cdi.k8s.io/gpu": "nvidia.com/pgpu=2",
    }
    result = strip_annotations(annotations, keep_inner=True)
    assert result.annotations == {
        "cdi.k8s.io/vfio12": "nvidia.com/gpu=0",
        "cdi.k8s.io/vfio3": "nvidia.com/gpu=1",
    }
    assert set(result.removed) == {"cdi.k8s.io/vfio", "cdi.k8s.io/vfiox", "cdi.k8s.io/gpu"}
    explicit = strip_annotations(annotations, keep=["cdi.k8s.io/gpu"])
    assert explicit.annotations == {"cdi.k8s.io/gpu": "nvidia.com/pgpu=2"}


@pytest.mark.parametrize(
    ("key", "inner"),
    [
        ("cdi.k8s.io/vfio0", True),
        ("cdi.k8s.io/vfio123", True),
        ("cdi.k8s.io/vfio", False),
        ("cdi.k8s.io/vfio1a", False),
        ("cdi.k8s.io/xvfio1", False),
        ("x/cdi.k8s.io/vfio1", False),
    ],
)
def test_inner_annotation_shape(key: str, inner: bool) -> None:
    assert is_inner_annotation(key) is inner


def test_stripping_works_whatever_the_order_of_the_two_steps() -> None:
    outer = {"cdi.k8s.io/vfio": "nvidia.com/pgpu=0", "app": "x"}
    inner = {"cdi.k8s.io/vfio14": "nvidia.com/gpu=0"}
    # Strip first, then the runtime adds its inner keys.
    first = {**strip_annotations(outer).annotations, **inner}
    # The runtime adds its inner keys first, then strips keeping them.
    second = strip_annotations({**outer, **inner}, keep_inner=True).annotations
    assert first == second == {"app": "x", "cdi.k8s.io/vfio14": "nvidia.com/gpu=0"}


ANNOTATIONS = st.dictionaries(
    st.one_of(
        st.text(max_size=12),
        st.builds(lambda s: "cdi.k8s.io/" + s, st.text(max_size=8)),
        st.builds(lambda n: f"cdi.k8s.io/vfio{n}", st.integers(0, 999)),
    ),
    st.text(max_size=20),
    max_size=8,
)


@settings(deadline=None)
@given(ANNOTATIONS, st.booleans())
def test_strip_is_idempotent_and_loses_nothing(
    annotations: dict[str, str], keep_inner: bool
) -> None:
    once = strip_annotations(annotations, keep_inner=keep_inner)
    twice = strip_annotations(once.annotations, keep_inner=keep_inner)
    assert twice.annotations == once.annotations
    assert twice.removed == {}
    assert {**once.annotations, **once.removed} == annotations
    assert not set(once.annotations) & set(once.removed)
    assert all(k.startswith("cdi.k8s.io/") for k in once.removed)
    assert parse_annotations(strip_annotations(annotations).annotations) == ([], [])


@settings(deadline=None)
@given(ANNOTATIONS)
def test_parse_annotations_raises_only_name_errors(annotations: dict[str, str]) -> None:
    try:
        keys, devices = parse_annotations(annotations)
    except CdiNameError:
        return
    assert keys == sorted(k for k in annotations if k.startswith("cdi.k8s.io/"))
    assert len(devices) >= len(keys)
