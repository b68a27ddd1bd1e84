"""Strict loading of spec files: real files, syntax, keys, types, go-yaml scalar rules."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import yaml
from cdi_support import CDI_DATA, copy_data, requires_data
from hypothesis import given, settings
from hypothesis import strategies as st

from kata_vfio.cdi import dump_spec, load_spec, minimum_version, parse_spec, validate_spec
from kata_vfio.cdi.yamlgo import format_go_float32, go_parse_int, load_yaml
from kata_vfio.errors import CdiSpecError, HostIOError

MINIMAL = """cdiVersion: 0.3.0
kind: vendor.com/device
devices:
- name: dev
  containerEdits:
    env: [A=1]
"""


def test_real_spec_files_load(tmp_path: Path) -> None:
    good = {
        "nvidia-container-toolkit/nvcdi-vfio-mode-pgpu-iommu-group.yaml": (
            "nvidia.com/pgpu",
            ["0"],
        ),
        "nvidia-container-toolkit/nvidia-ctk-generate-default.yaml": (
            "example.com/device",
            ["0", "all"],
        ),
        "nvidia-container-toolkit/nvidia-ctk-generate-disable-hooks-all.yaml": (
            "example.com/device",
            ["0", "all"],
        ),
        "cncf-cdi/schema/testdata/good/minimal.json": ("vendor.com/device", ["myDevice"]),
        "cncf-cdi/schema/testdata/good/spec-example.json": ("vendor.com/device", ["myDevice"]),
    }
    for relative, (kind, names) in good.items():
        path = copy_data(requires_data(CDI_DATA / relative), tmp_path / Path(relative).name)
        spec = load_spec(path)
        assert spec.kind == kind
        assert [d.name for d in spec.devices] == names


def test_nvidia_ctk_spec_details(tmp_path: Path) -> None:
    source = requires_data(CDI_DATA / "nvidia-container-toolkit/nvidia-ctk-generate-default.yaml")
    spec = load_spec(copy_data(source, tmp_path / "nvidia.yaml"))
    hooks = spec.container_edits.hooks
    assert hooks[0].hook_name == "createContainer"
    assert hooks[0].args[:2] == ("nvidia-cdi-hook", "create-symlinks")
    assert hooks[0].env == ("NVIDIA_CTK_DEBUG=false",)
    assert (
        spec.devices[0].container_edits.device_nodes[0].host_path
        == "/run/nvidia/driver/dev/nvidia0"
    )
    assert minimum_version(spec) == "0.5.0"


def test_the_pgpu_sample_without_a_device_name_is_rejected(tmp_path: Path) -> None:
    # Its "name" sits at the top level (bad indentation), so the device has none.
    source = requires_data(CDI_DATA / "nvidia-cloud-native-docs/nvidia.com-pgpu.yaml")
    path = copy_data(source, tmp_path / "nvidia.com-pgpu.yaml")
    with pytest.raises(CdiSpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert "unknown field 'name'" in str(info.value)


def test_empty_documents_are_rejected(tmp_path: Path) -> None:
    for text in ["", "   \n", "# only a comment\n", "null\n", "---\n"]:
        with pytest.raises(CdiSpecError, match="no Spec data"):
            parse_spec(text, source="x.yaml")
    source = requires_data(CDI_DATA / "cncf-cdi/schema/testdata/bad/explicit-empty.json")
    with pytest.raises(CdiSpecError, match="invalid version") as info:
        load_spec(copy_data(source, tmp_path / "empty.json"))
    assert any("no devices" in p for p in info.value.problems)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (MINIMAL + "extra: 1\n", "top level: unknown field 'extra'"),
        (
            MINIMAL.replace("- name: dev", "- name: dev\n  nmae: x"),
            "devices[0]: unknown field 'nmae'",
        ),
        (MINIMAL.replace("cdiVersion", "cdiVersions"), "unknown field 'cdiVersions'"),
        (
            MINIMAL + "containerEdits:\n  intelRdt:\n    enableCMT: true\n",
            "unknown field 'enableCMT'",
        ),
        (
            MINIMAL + "containerEdits:\n  deviceNodes:\n  - path: /dev/x\n    major: '5'\n",
            "containerEdits.deviceNodes[0].major: expected an integer",
        ),
        (
            MINIMAL + "containerEdits:\n  deviceNodes:\n  - path: /dev/x\n    uid: -1\n",
            "out of range for uint32",
        ),
        (
            MINIMAL + "containerEdits:\n  deviceNodes:\n  - path: /dev/x\n    major: 1.5\n",
            "expected an integer (int64), got 1.5",
        ),
        (
            MINIMAL + "containerEdits:\n  deviceNodes:\n  - path: /dev/x\n    major: true\n",
            "got boolean true",
        ),
        (
            MINIMAL + "containerEdits:\n  deviceNodes: [null]\n",
            "deviceNodes[0]: expected an object, got null",
        ),
        (MINIMAL + "containerEdits:\n  env: A=1\n", "containerEdits.env: expected a list"),
        (
            MINIMAL + "containerEdits:\n  env: [[a]]\n",
            "containerEdits.env[0]: expected a string, got a list",
        ),
        (
            MINIMAL + "containerEdits:\n  intelRdt: {enableMonitoring: 'yes'}\n",
            "expected true or false",
        ),
        (MINIMAL + "annotations: [a]\n", "annotations: expected an object of strings"),
        (MINIMAL + 'containerEdits:\n  env: ["A=\\0"]\n', "NUL character"),
        ("- a\n- b\n", "top level: expected an object, got a list"),
        ("just text\n", "expected an object, got string"),
    ],
)
def test_bad_documents_name_the_field(text: str, field: str) -> None:
    with pytest.raises(CdiSpecError) as info:
        parse_spec(text, source="/etc/cdi/x.yaml")
    assert "/etc/cdi/x.yaml" in str(info.value)
    assert field in str(info.value)
    assert info.value.hint


def test_dropped_intel_rdt_fields_get_a_hint() -> None:
    with pytest.raises(CdiSpecError) as info:
        parse_spec(MINIMAL + "containerEdits:\n  intelRdt:\n    enableMBM: true\n")
    assert info.value.hint is not None
    assert "dropped in CDI 1.1.0" in info.value.hint


@pytest.mark.parametrize(
    "text",
    [
        MINIMAL + "kind: other.com/x\n",
        '{"cdiVersion": "0.3.0", "kind": "a.com/b", "kind": "c.com/d", "devices": []}',
        '{"cdiVersion": "0.3.0", "kind": "a.com/b",\n "devices": [{"name": "x", "name": "y"}]}',
        "a: 1\nb:\n  c: 1\n  c: 2\n",
    ],
)
def test_duplicate_keys_are_rejected(text: str) -> None:
    with pytest.raises(CdiSpecError, match="duplicate key"):
        parse_spec(text)


@pytest.mark.parametrize(
    "tail",
    [
        "---\n",  # an empty trailing document, as concatenating tools leave
        "...\n",
        "---\n# nothing\n",
        "---\n" + MINIMAL.replace("dev", "other"),
        "---\nnot: [valid, yaml\n",  # never read: only the token ending the first is scanned
    ],
)
def test_only_the_first_document_is_read_as_go_yaml_does(tail: str) -> None:
    # go-yaml v2's Unmarshal (under sigs.k8s.io/yaml) decodes the first document only, so the
    # reference loads such a file; refusing it would hide devices the runtime does inject.
    for text in (MINIMAL + tail, json.dumps(_minimal_json()) + "\n" + tail):
        spec = parse_spec(text)
        assert [d.name for d in spec.devices] == ["dev"]
        pure = load_yaml(text, pure_python=True)
        assert [d["name"] for d in pure["devices"]] == ["dev"]


def test_the_token_after_the_first_document_is_still_scanned() -> None:
    # libyaml (and go-yaml) scan one token past the document to end it: '@' cannot start one.
    with pytest.raises(CdiSpecError, match="line 7"):
        parse_spec(MINIMAL + "@bad\n")


def _minimal_json() -> dict[str, object]:
    return {
        "cdiVersion": "0.3.0",
        "kind": "vendor.com/device",
        "devices": [{"name": "dev", "containerEdits": {"env": ["A=1"]}}],
    }


def test_syntax_errors_give_the_line() -> None:
    with pytest.raises(CdiSpecError, match="line 3, column 6") as info:
        parse_spec("cdiVersion: 0.3.0\nkind: a.com/b\n  bad: indent\n", source="/etc/cdi/x.yaml")
    assert "byte string" not in str(info.value)


def test_yaml_scalars_in_string_fields_become_strings_as_in_go() -> None:
    spec = parse_spec(
        "cdiVersion: 0.5.0\nkind: a.com/b\ndevices:\n"
        "- {name: 0, containerEdits: {env: [A=1]}}\n"
        "- {name: 1:2, containerEdits: {env: [A=1]}}\n"
        "- {name: y, containerEdits: {env: [A=1]}}\n"
        "- {name: 1.50, containerEdits: {env: [A=1]}}\n"
        "- {name: 0x1F, containerEdits: {env: [A=1]}}\n"
        "- {name: 2001-12-14, containerEdits: {env: [A=1]}}\n"
        "- {name: 1e5, containerEdits: {env: [A=1]}}\n"
        "- {name: 012, containerEdits: {env: [A=1]}}\n"
    )
    # 1:2 is a string (no base-60 numbers in go-yaml), y is a boolean, 0x1F and 012 are ints.
    assert [d.name for d in spec.devices] == [
        "0",
        "1:2",
        "true",
        "1.5",
        "31",
        "2001-12-14",
        "100000",
        "10",
    ]


def test_json_files_may_hold_yaml_and_tabs_are_fine_in_json(tmp_path: Path) -> None:
    as_yaml = tmp_path / "spec.json"
    as_yaml.write_text(MINIMAL)
    assert load_spec(as_yaml).kind == "vendor.com/device"
    tabbed = tmp_path / "tabbed.yaml"
    tabbed.write_text(
        '{\n\t"cdiVersion": "0.3.0",\n\t"kind": "a.com/b",\n'
        '\t"devices": [{"name": "d", "containerEdits": {"env": ["A=1"]}}]\n}\n'
    )
    assert load_spec(tabbed).kind == "a.com/b"
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "{cdiVersion: 0.3.0, kind: a.com/b, devices: [{name: d, containerEdits: {env: [A=1]}}]}\n"
    )
    assert load_spec(flow).devices[0].name == "d"


def test_json_and_yaml_paths_agree() -> None:
    document = {
        "cdiVersion": "0.7.0",
        "kind": "a.com/b",
        "devices": [
            {
                "name": "d",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/x", "major": 5, "fileMode": 438}],
                    "additionalGids": [0, 5],
                },
            }
        ],
        "containerEdits": {"hooks": [{"hookName": "poststop", "path": "/bin/h", "timeout": 3}]},
    }
    text = json.dumps(document)
    assert parse_spec(text) == parse_spec(dump_spec(parse_spec(text)))
    assert parse_spec(text) == parse_spec("\n" + text.replace("{", "{ "))


def test_alias_bombs_and_recursion_are_refused() -> None:
    # Nine levels of ten aliases each: a billion strings if expanded.
    lines = ["  a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        previous, current = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"  {current}: &{current} [" + ", ".join([f"*{previous}"] * 10) + "]")
    bomb = "defs:\n" + "\n".join(lines) + "\n"
    bomb += (
        "cdiVersion: 0.3.0\nkind: a.com/b\ndevices:\n- name: d\n  containerEdits:\n    env: *i\n"
    )
    with pytest.raises(CdiSpecError, match=r"unknown field 'defs'|expands far beyond"):
        parse_spec(bomb)
    wide = (
        "cdiVersion: 0.3.0\nkind: a.com/b\ndevices:\n- name: d\n  containerEdits:\n    env: &e ["
        + ", ".join(["A=1"] * 10)
        + "]\n"
    )
    wide += "".join(f"- name: d{i}\n  containerEdits: {{env: *e}}\n" for i in range(3))
    assert len(parse_spec(wide).devices) == 4  # modest reuse of an anchor is fine
    with pytest.raises(CdiSpecError):
        parse_spec(
            "cdiVersion: 0.3.0\nkind: a.com/b\ndevices: &d\n"
            "- name: x\n  containerEdits:\n    env: *d\n"
        )
    with pytest.raises(CdiSpecError):
        parse_spec("[" * 5000 + "]" * 5000)


def test_expansion_budget_stops_aliases_in_known_fields() -> None:
    lines = ["e0: &e0 [A=1, A=1, A=1, A=1, A=1, A=1, A=1, A=1]"]
    for level in range(1, 7):
        lines.append(f"e{level}: &e{level} [" + ", ".join([f"*e{level - 1}"] * 8) + "]")
    anchors = "\n".join("    " + line for line in lines)
    text = (
        "cdiVersion: 0.3.0\nkind: a.com/b\ndevices:\n- name: d\n  containerEdits:\n"
        "    env: [A=1]\n  annotations:\n" + anchors.replace("    ", "    ", 1) + "\n"
    )
    with pytest.raises(CdiSpecError):
        parse_spec(text)


def test_unreadable_and_special_files(tmp_path: Path) -> None:
    with pytest.raises(HostIOError) as info:
        load_spec(tmp_path / "missing.yaml")
    assert info.value.errno == 2
    with pytest.raises(HostIOError, match="not a regular file"):
        load_spec(tmp_path)


def test_go_integer_and_float_rules() -> None:
    assert go_parse_int("0x1F") == 31
    assert go_parse_int("0o17") == 15
    assert go_parse_int("017") == 15
    assert go_parse_int("-0b11") == -3
    assert go_parse_int("08") is None
    assert go_parse_int("18446744073709551615") == 2**64 - 1
    assert go_parse_int("-9223372036854775809") is None
    assert go_parse_int("") is None
    assert [
        format_go_float32(v) for v in (1.0, 1.5, 1e6, 123456.0, 0.0001, 1e-05, 1234567.0, -2.5, 0.1)
    ] == ["1", "1.5", "1e+06", "123456", "0.0001", "1e-05", "1.234567e+06", "-2.5", "0.1"]
    assert load_yaml(b"a: .inf\nb: ~\nc: off\nd: <<\n") == {
        "a": float("inf"),
        "b": None,
        "c": False,
        "d": "<<",
    }


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "cdiVersion",
                    "kind",
                    "devices",
                    "name",
                    "containerEdits",
                    "env",
                    "deviceNodes",
                    "path",
                    "major",
                    "hooks",
                    "hookName",
                    "mounts",
                    "intelRdt",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(DOCS)
def test_generated_documents_raise_only_spec_errors(document: object) -> None:
    for text in (json.dumps(document), _yamlish(document)):
        try:
            spec = parse_spec(text)
            validate_spec(spec)
        except CdiSpecError:
            continue


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_spec_errors(data: bytes) -> None:
    with contextlib.suppress(CdiSpecError):
        parse_spec(data)


def _yamlish(document: object) -> str:
    import yaml

    return yaml.safe_dump(document)


@settings(max_examples=100, deadline=None)
@given(DOCS)
def test_libyaml_and_pure_python_loaders_agree(document: object) -> None:
    text = _yamlish(document).encode()
    results = []
    for pure in (False, True):
        try:
            results.append(("ok", load_yaml(text, pure_python=pure)))
        except Exception as exc:  # the same kind of failure on both parsers
            results.append(("error", type(exc).__name__))
    assert results[0] == results[1]


def test_both_loaders_read_the_real_files_alike() -> None:
    for path in sorted(requires_data(CDI_DATA).rglob("*.yaml")):
        data = path.read_bytes()
        assert load_yaml(data) == load_yaml(data, pure_python=True)


def test_null_items_read_as_go_zero_values() -> None:
    # Go's JSON decoder leaves a null list item at its zero value: "" for a string, 0 for a gid.
    spec = parse_spec(
        "cdiVersion: 0.7.0\nkind: a.com/b\ndevices:\n- name: d\n  containerEdits:\n"
        "    additionalGids: [null, 5]\n    mounts: [{hostPath: /a, containerPath: /b,"
        " options: [null]}]\n"
    )
    edits = spec.devices[0].container_edits
    assert edits.additional_gids == (0, 5)
    assert edits.mounts[0].options == ("",)
    assert minimum_version(spec) == "0.7.0"


def test_keys_match_fields_case_insensitively_as_go_json_does() -> None:
    # encoding/json takes "CdiVersion" for cdiVersion, and so does every reference consumer.
    spec = parse_spec(
        "CdiVersion: 0.5.0\nKIND: a.com/b\ndevices:\n- NAME: 0\n  containeredits:\n"
        "    DeviceNodes: [{Path: /dev/x, hostpath: /dev/y}]\n"
    )
    assert (spec.version, spec.kind, spec.devices[0].name) == ("0.5.0", "a.com/b", "0")
    node = spec.devices[0].container_edits.device_nodes[0]
    assert (node.path, node.host_path) == ("/dev/x", "/dev/y")
    # The Kelvin sign and the long s fold onto K and S as in Go; other letters do not.
    assert parse_spec(MINIMAL.replace("kind", "\u212aind")).kind == "vendor.com/device"
    with pytest.raises(CdiSpecError, match="unknown field"):
        parse_spec(MINIMAL.replace("kind", "k\u00efnd"))


def test_two_keys_for_one_field_resolve_in_sorted_key_order() -> None:
    # The reference turns the YAML into a Go map and then JSON with sorted keys: of "Kind"
    # and "kind" the latter ("K" < "k") is decoded last and wins, whatever the file's order.
    for text in (
        MINIMAL + "Kind: other.com/x\n",
        MINIMAL.replace("kind:", "Kind: other.com/x\nkind:"),
    ):
        assert parse_spec(text).kind == "vendor.com/device"
    as_json = '{"kind": "a.com/b", "KIND": "c.com/d", "cdiVersion": "0.3.0", "devices": []}'
    assert parse_spec(as_json).kind == "a.com/b"


MERGED = """cdiVersion: 0.5.0
kind: a.com/merge
devices:
- name: base
  containerEdits: &e
    env: [M=base]
- name: other
  containerEdits:
    <<: *e
    {extra}
"""


def test_merge_keys_may_add_keys_but_not_override_them() -> None:
    # go-yaml's strict decoder (and so podman) loads a merge that adds mounts, and refuses a
    # spec whose explicit key repeats a merged one: "env" set twice.
    spec = parse_spec(MERGED.format(extra="mounts: [{hostPath: /a, containerPath: /b}]"))
    edits = spec.devices[1].container_edits
    assert (edits.env, edits.mounts[0].container_path) == (("M=base",), "/b")
    for pure in (False, True):
        with pytest.raises(yaml.YAMLError, match="duplicate key 'env'"):
            load_yaml(MERGED.format(extra="env: [M=over]"), pure_python=pure)
    with pytest.raises(CdiSpecError, match="duplicate key 'env'"):
        parse_spec(MERGED.format(extra="env: [M=over]"))
    with pytest.raises(CdiSpecError, match="duplicate key"):
        parse_spec("a: &a {x: 1}\nb: &b {x: 2}\nc: {<<: [*a, *b]}\n")


def test_merge_keys_follow_go_yaml_whatever_the_pyyaml_version() -> None:
    # go-yaml v2 sets merged pairs into the same map (a sequence from its last element to its
    # first) and its strict decoder refuses any key set twice. PyYAML's own merge handling
    # changed in 6.0.4 (it drops a merged key whose string object was already merged), so the
    # loader expands merges itself: the same results on every PyYAML and on both parsers.
    duplicates = (
        "a: &a {x: 1}\nc: {<<: [*a, *a]}\n",
        "a: &a {xyz: 1}\nb: &b {xyz: 2}\nc: {<<: [*a, *b]}\n",
        "a: &a {x: 1}\nb: &b {<<: *a, w: 2}\nc: {<<: [*b, *a]}\n",
        "a: &a {x: 1}\nc: {x: 2, <<: *a}\n",
    )
    for pure in (False, True):
        for text in duplicates:
            with pytest.raises(yaml.YAMLError, match="duplicate key 'x"):
                load_yaml(text, pure_python=pure)
        with pytest.raises(yaml.YAMLError, match="merges itself"):
            load_yaml("a: &a {x: 1, <<: *a}\n", pure_python=pure)
        with pytest.raises(yaml.YAMLError, match="expected a mapping for merging"):
            load_yaml("a: &a {x: 1}\nc: {<<: [*a, 3]}\n", pure_python=pure)
        merged = load_yaml(
            "a: &a {p: 1}\nb: &b {<<: *a, q: 2}\nc: {<<: [*b, {r: 3}], s: 4, '<<': 5}\n",
            pure_python=pure,
        )
        assert merged["c"] == {"p": 1, "q": 2, "r": 3, "s": 4, "<<": 5}
        # Merges of merges are expanded once each, not once per path (2**40 here).
        chain = ["m0: &m0 {}"] + [
            f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}]}}" for i in range(1, 41)
        ]
        assert load_yaml("\n".join(chain), pure_python=pure)["m40"] == {}


def test_binary_and_timestamp_tags_read_as_go_yaml_reads_them() -> None:
    # go-yaml: an explicit !!timestamp stays its text; !!binary is the decoded bytes as a
    # string, and bad base64 (Go's strict decoder: padding required) is an error.
    for pure in (False, True):
        assert load_yaml("a: [!!binary QT0x, !!timestamp 2001-12-14]", pure_python=pure) == {
            "a": ["A=1", "2001-12-14"]
        }
        for bad in ("!!binary '%%%'", "!!binary QT0"):
            with pytest.raises(yaml.YAMLError, match="invalid base64"):
                load_yaml(f"a: {bad}", pure_python=pure)
    spec = parse_spec(MINIMAL.replace("env: [A=1]", "env: [!!binary QT0x]"))
    assert spec.devices[0].container_edits.env == ("A=1",)


# Python's int() refuses strings of more than 4,300 digits; such runs must never reach it.
LONG_DIGITS = st.integers(4_290, 6_000).map(lambda n: "7" * n)


@settings(max_examples=40, deadline=None)
@given(
    digits=st.text("0123456789", min_size=1, max_size=60),
    zeros=st.integers(0, 5_000),
)
def test_go_parse_int_decides_from_the_digit_count(digits: str, zeros: int) -> None:
    body = digits.lstrip("0") or "0"
    expected = int(body) if int(body) <= 2**64 - 1 else None
    # A leading zero makes Go read octal: only the hex form keeps decimal digits meaningful.
    assert go_parse_int(body) == expected
    assert go_parse_int("0x" + "0" * zeros + format(int(body), "x")) == expected
    assert go_parse_int("0b" + "0" * zeros + format(int(body), "b")) == expected


@settings(max_examples=20, deadline=None)
@given(run=LONG_DIGITS, prefix=st.sampled_from(["", "-", "+", "0x", "0o", "0b1", "0"]))
def test_go_parse_int_refuses_long_runs_without_int(run: str, prefix: str) -> None:
    assert go_parse_int(prefix + run.replace("7", "1")) is None


LONG_NUMBER_PLACES = [
    # (template with {n}, what the loader makes of it)
    ("cdiVersion: 0.6.0\nkind: v.com/c\ndevices:\n- name: {n}\n  containerEdits:\n"
     "    env: [A=1]\n", "name"),
    ("cdiVersion: 0.6.0\nkind: v.com/c\nannotations:\n  k: {n}\ndevices:\n- name: d\n"
     "  containerEdits:\n    env: [A=1]\n", "annotation"),
    ("cdiVersion: 0.6.0\nkind: v.com/c\nannotations:\n  ? {n}\n  : v\ndevices:\n- name: d\n"
     "  containerEdits:\n    env: [A=1]\n", "key"),
    ("cdiVersion: 0.6.0\nkind: v.com/c\ndevices:\n- name: d\n  containerEdits:\n"
     "    deviceNodes:\n    - path: /dev/x\n      major: {n}\n", "major"),
    ("cdiVersion: 0.6.0\nkind: v.com/c\ndevices:\n- name: d\n  containerEdits:\n"
     "    additionalGids: [{n}]\n", "additionalGids"),
    ("cdiVersion: 0.6.0\nkind: v.com/c\ndevices:\n- name: d\n  containerEdits:\n"
     "    hooks:\n    - hookName: createRuntime\n      path: /bin/true\n      timeout: -{n}\n",
     "timeout"),
    ('{{"cdiVersion": "0.6.0", "kind": "v.com/c", "devices": [{{"name": "d", '
     '"containerEdits": {{"deviceNodes": [{{"path": "/dev/x", "minor": {n}}}]}}}}]}}', "minor"),
    ('{{"cdiVersion": "0.6.0", "kind": "v.com/c", "devices": [{{"name": "d", '
     '"containerEdits": {{"additionalGids": [{n}.5e-3]}}}}]}}', "additionalGids"),
]  # fmt: skip


@settings(max_examples=30, deadline=None)
@given(run=LONG_DIGITS, place=st.sampled_from(LONG_NUMBER_PLACES))
def test_long_numbers_anywhere_give_spec_errors_or_strings(
    run: str, place: tuple[str, str]
) -> None:
    template, where = place
    text = template.format(n=run)
    try:
        spec = parse_spec(text)
        validate_spec(spec)
    except CdiSpecError as exc:
        assert where in str(exc)
        assert len(str(exc)) < 600, "the long input is echoed truncated"
        return
    # Where a string belongs, go-yaml reads a number too large for a float as its text.
    assert where in ("name", "annotation", "key")
    values = [spec.devices[0].name, *spec.annotations.values(), *spec.annotations.keys()]
    assert run in values


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e999", ".nan", "-.inf"])
def test_non_finite_numbers_are_refused_where_integers_belong(value: str) -> None:
    # The reference reads JSON as YAML: NaN is the string "NaN" there, never a number.
    text = (
        '{"cdiVersion": "0.6.0", "kind": "v.com/c", "devices": [{"name": "d", "containerEdits":'
        f' {{"deviceNodes": [{{"path": "/dev/x", "major": {value}}}]}}}}]}}'
    )
    with pytest.raises(CdiSpecError, match=r"deviceNodes\[0\]\.major: expected an integer"):
        parse_spec(text)
