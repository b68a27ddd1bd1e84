"""Kata configuration: the real files, Kata's validation, and the pod annotation overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sandbox_hosts import KATA_CONFIGS

from kata_vfio.errors import ConfigError, KataVfioError
from kata_vfio.kata.config import (
    HYPERVISOR_ANNOTATION_PREFIX as HV,
)
from kata_vfio.kata.config import (
    KataConfig,
    QemuSection,
    apply_annotations,
    config_from_toml,
    load_config,
)

REAL = {
    "runtime-go/configuration-qemu.toml": ("no-port", "no-port", 0, "guest-kernel", 2048),
    "runtime-go/configuration-qemu-nvidia-gpu.toml": (
        "root-port",
        "no-port",
        8,
        "guest-kernel",
        8192,
    ),
    "runtime-go/configuration-qemu-nvidia-gpu-snp.toml": (
        "root-port",
        "no-port",
        0,
        "guest-kernel",
        8192,
    ),
    "runtime-rs/configuration-qemu-runtime-rs.toml": (
        "no-port",
        "no-port",
        0,
        "guest-kernel",
        2048,
    ),
    "runtime-rs/configuration-qemu-nvidia-gpu-runtime-rs.toml": (
        "root-port",
        "no-port",
        8,
        "guest-kernel",
        8192,
    ),
    # A hand-written runtime-rs fixture: default_memory = 128 is below Kata's minimum, so Kata
    # (and we) use the default 2048 MiB.
    "upstream-fixtures/runtime-rs-tests-texture-configuration-qemu.toml": (
        "no-port",
        "no-port",
        2,
        "vfio",
        2048,
    ),
}


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "configuration-qemu.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_kata_configurations_load_with_kata_values(name: str) -> None:
    path = KATA_CONFIGS / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    config = load_config(path, host_cpus=8)
    cold, hot, ports, mode, memory = REAL[name]
    assert (config.cold_plug_vfio, config.hot_plug_vfio) == (cold, hot)
    assert config.pcie_root_port == ports
    assert config.vfio_mode == mode
    assert config.default_memory == memory
    assert config.hypervisor == "qemu" and config.qemu is not None
    assert config.qemu.machine_type == "q35"
    assert config.path.startswith("/")
    assert config.source == str(path)


def test_nvidia_config_keeps_the_paths_and_annotation_list(nvidia_config: KataConfig) -> None:
    assert nvidia_config.path == "/opt/kata/bin/qemu-system-x86_64"
    assert nvidia_config.kernel.endswith("vmlinuz-nvidia-gpu.container")
    assert nvidia_config.image.endswith("kata-containers-nvidia-gpu.img")
    assert nvidia_config.initrd == ""
    assert nvidia_config.enable_annotations == (
        "enable_iommu",
        "kernel_params",
        "kernel_verity_params",
    )
    assert nvidia_config.pod_resource_api_sock == "/var/lib/kubelet/pod-resources/kubelet.sock"
    assert nvidia_config.rootfs_type == "erofs"
    assert nvidia_config.cold_plug and nvidia_config.plug_port == "root-port"


def test_missing_keys_take_kata_defaults_and_unknown_keys_are_ignored(tmp_path: Path) -> None:
    config = load_config(
        _toml(
            tmp_path,
            '[hypervisor.qemu]\npath = "/usr/bin/qemu"\nfoo = 1\n'
            "[runtime]\nbar = true\n[agent.kata]\nx = 1\n",
        )
    )
    assert config == KataConfig(path="/usr/bin/qemu")
    assert config.cold_plug_vfio == config.hot_plug_vfio == "no-port"
    assert config.vfio_mode == "guest-kernel" and config.default_memory == 2048


def test_empty_strings_take_kata_defaults(tmp_path: Path) -> None:
    """Kata reads an empty string for these keys as "not set" (its coldPlugVFIO(),
    machineType(), path() ... helpers and the vfio_mode check)."""
    config = load_config(
        _toml(
            tmp_path,
            '[hypervisor.qemu]\npath = ""\nmachine_type = ""\nrootfs_type = ""\n'
            'cold_plug_vfio = ""\nhot_plug_vfio = ""\n[runtime]\nvfio_mode = ""\n',
        )
    )
    assert config == KataConfig()


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (
            'cold_plug_vfio = "root-port"\nhot_plug_vfio = "root-port"',
            ["cold_plug_vfio", "hot_plug_vfio", "exclusive"],
        ),
        ('cold_plug_vfio = "pci-port"', ["cold_plug_vfio", "pci-port"]),
        ('hot_plug_vfio = "bridge-port"', ["hot_plug_vfio", "bridge-port"]),
        ("pcie_root_port = 17", ["pcie_root_port", "17"]),
        ("pcie_switch_port = -1", ["pcie_switch_port"]),
        ('cold_plug_vfio = "root-port"\nmachine_type = "pc"', ["machine_type", "pc"]),
        ('image = "/a.img"\ninitrd = "/b.img"', ["image", "initrd"]),
        ('pcie_root_port = "8"', ["pcie_root_port", "str"]),
        ("enable_iommu = 1", ["enable_iommu", "int"]),
        ('kernel = "vmlinuz"', ["kernel", "absolute"]),
        ('enable_annotations = ["("]', ["enable_annotations", "regular expression"]),
        ("enable_annotations = [1]", ["enable_annotations", "strings"]),
    ],
)
def test_invalid_settings_are_refused_naming_the_key(
    tmp_path: Path, body: str, names: list[str]
) -> None:
    path = _toml(tmp_path, f'[hypervisor.qemu]\npath = "/usr/bin/qemu"\n{body}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    for name in names:
        assert name in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.hint


def test_vfio_mode_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vfio_mode = 'passthrough'"):
        load_config(
            _toml(
                tmp_path, '[hypervisor.qemu]\npath = "/q"\n[runtime]\nvfio_mode = "passthrough"\n'
            )
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[hypervisor.qemu\n", "not valid TOML"),
        ("runtime = 1\n", "no [hypervisor.<name>] section"),
        ("[hypervisor.clh]\n[hypervisor.qemu]\npath = '/q'\n", "more than one hypervisor"),
        ("[hypervisor.vbox]\npath = '/x'\n", "not a hypervisor Kata knows"),
        ("[hypervisor.clh]\nkernel = '/k'\n", "path is not set"),
        ("hypervisor = 3\n", "no [hypervisor.<name>] section"),
        ("[hypervisor]\nqemu = 3\n", "[hypervisor.qemu] is not a table"),
        ("runtime = 3\n[hypervisor.qemu]\npath = '/q'\n", "[runtime] is not a table"),
        (b"\xff\xfe".decode("latin-1"), "not valid TOML"),
    ],
)
def test_broken_files_give_config_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(_toml(tmp_path, text))


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read Kata configuration") as info:
        load_config(tmp_path / "absent.toml")
    assert "--config" in (info.value.hint or "")


def test_vcpus_follow_kata_rules(tmp_path: Path) -> None:
    def vcpus(value: str) -> int:
        path = _toml(tmp_path, f'[hypervisor.qemu]\npath = "/q"\ndefault_vcpus = {value}\n')
        return load_config(path, host_cpus=4).default_vcpus

    assert vcpus("0") == 1  # unset means 1
    assert vcpus("1.5") == 2  # fractional CPUs round up
    assert vcpus("-1") == 4  # negative means every host CPU
    assert vcpus("99") == 4  # more than the host has means every host CPU


def test_annotation_not_enabled_is_refused(nvidia_config: KataConfig) -> None:
    with pytest.raises(ConfigError, match="cold_plug_vfio is not enabled") as info:
        apply_annotations(nvidia_config, {HV + "cold_plug_vfio": "switch-port"})
    assert "enable_annotations" in (info.value.hint or "")


def test_enabled_annotations_apply_and_others_are_untouched(nvidia_config: KataConfig) -> None:
    config = KataConfig(
        path="/q",
        cold_plug_vfio="root-port",
        kernel_params="quiet",
        enable_annotations=(
            "cold_plug_vfio",
            "hot_plug_vfio",
            "pcie_.*",
            "enable_iommu",
            "default_.*",
            "kernel_params",
            "machine_type",
        ),
    )
    updated = apply_annotations(
        config,
        {
            HV + "pcie_root_port": "12",
            HV + "enable_iommu": "true",
            HV + "default_memory": "4096",
            HV + "default_vcpus": "3",
            HV + "kernel_params": "pci=realloc",
            "io.katacontainers.config.runtime.vfio_mode": "vfio",
            "io.kubernetes.cri.sandbox-id": "abc",
        },
        host_cpus=8,
    )
    assert updated.pcie_root_port == 12
    assert updated.enable_iommu is True
    assert (updated.default_memory, updated.default_vcpus) == (4096, 3)
    assert updated.kernel_params == "quiet pci=realloc"
    assert updated.vfio_mode == "vfio"
    assert updated.cold_plug_vfio == "root-port"
    assert config.pcie_root_port == 0  # the input is never changed


def test_plug_mode_annotation_turns_the_other_mode_off() -> None:
    config = KataConfig(path="/q", cold_plug_vfio="root-port", enable_annotations=(".*_plug_vfio",))
    hot = apply_annotations(config, {HV + "hot_plug_vfio": "switch-port"})
    assert (hot.cold_plug_vfio, hot.hot_plug_vfio) == ("no-port", "switch-port")
    cold = apply_annotations(hot, {HV + "cold_plug_vfio": ""})
    assert (cold.cold_plug_vfio, cold.hot_plug_vfio) == ("no-port", "no-port")
    with pytest.raises(ConfigError, match="exclusive"):
        apply_annotations(
            config, {HV + "hot_plug_vfio": "root-port", HV + "cold_plug_vfio": "root-port"}
        )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("enable_iommu", "yes", "not a boolean"),
        ("pcie_root_port", "-3", "not a positive number"),
        ("pcie_root_port", "17", "out of range"),
        ("default_memory", "64", "below the minimum"),
        ("default_vcpus", "9", "exceed"),
        ("default_vcpus", "two", "not a positive number"),
        ("cold_plug_vfio", "pcie-port", "invalid PCIe port"),
        ("path", "/usr/bin/evil", "not valid"),
        ("kernel", "/boot/../etc/shadow", "normalised"),
    ],
)
def test_bad_annotation_values_name_the_annotation(key: str, value: str, message: str) -> None:
    config = KataConfig(
        path="/q", enable_annotations=(".*",), valid_hypervisor_paths=("/opt/kata/bin/*",)
    )
    with pytest.raises(ConfigError, match=message):
        apply_annotations(config, {HV + key: value}, host_cpus=8)


def test_hypervisor_path_annotation_needs_a_valid_path_glob() -> None:
    config = KataConfig(
        path="/q", enable_annotations=("path",), valid_hypervisor_paths=("/opt/kata/bin/*",)
    )
    assert (
        apply_annotations(config, {HV + "path": "/opt/kata/bin/qemu-x"}).path
        == "/opt/kata/bin/qemu-x"
    )
    # Kata matches with filepath.Glob: '*' stays inside one path element, and the path must
    # be one of the files the glob names, so no '..' or '//' escapes the listed directory.
    for escape in (
        "/opt/kata/bin/x/../../../../tmp/evil",
        "/opt/kata/bin/sub/qemu",
        "/opt/kata/bin//qemu",
        "/opt/kata/bin/./qemu",
    ):
        with pytest.raises(ConfigError, match="not valid"):
            apply_annotations(config, {HV + "path": escape})


def test_runtime_vfio_mode_annotation_is_checked() -> None:
    with pytest.raises(ConfigError, match="unknown VFIO mode 'raw'"):
        apply_annotations(
            KataConfig(path="/q"), {"io.katacontainers.config.runtime.vfio_mode": "raw"}
        )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("default_memory", "9" * 5000, "out of range"),
        ("default_memory", "4294967296", r"out of range \(0\.\.4294967295\)"),
        ("pcie_root_port", "0" * 5000 + "1", None),
        ("pcie_switch_port", "1" * 30, "out of range"),
        ("default_vcpus", "9" * 400, "not a positive number"),
        ("default_vcpus", "NaN", "not a positive number"),
    ],
)
def test_long_and_huge_numbers_in_annotations(key: str, value: str, message: str | None) -> None:
    config = KataConfig(path="/q", cold_plug_vfio="root-port", enable_annotations=(".*",))
    if message is None:  # leading zeros are fine, as for strconv.ParseUint
        assert apply_annotations(config, {HV + key: value}).pcie_root_port == 1
        return
    with pytest.raises(ConfigError, match=message) as info:
        apply_annotations(config, {HV + key: value}, host_cpus=8)
    assert HV + key in str(info.value)
    assert len(str(info.value)) < 300, "the value is echoed cut short"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("default_memory = 4294967296", "default_memory = 4294967296 MiB is out of range"),
        ("default_memory = " + "9" * 5000, "not valid TOML"),
        ("default_vcpus = nan", "default_vcpus = nan is not a number of CPUs"),
        ("default_vcpus = inf", "default_vcpus = inf is not a number of CPUs"),
        ("pcie_root_port = " + "9" * 4000, "pcie_root_port = 999"),
    ],
)
def test_out_of_range_numbers_in_the_file_name_the_key(
    tmp_path: Path, body: str, message: str
) -> None:
    path = _toml(tmp_path, f'[hypervisor.qemu]\npath = "/usr/bin/qemu"\n{body}\n')
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert len(str(info.value)) < 400


def test_no_overrides_returns_the_same_config() -> None:
    config = KataConfig(path="/q")
    assert apply_annotations(config, {"cdi.k8s.io/vfio": "nvidia.com/pgpu=0"}) is config


_VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["true", "0", "8", "17", "root-port", "vfio", "", "nan", "inf", "1e999"]),
    # int() refuses more than 4,300 digits; float() makes inf of 309 or more.
    st.integers(300, 6000).map(lambda n: "9" * n),
    st.integers(0, 2**40).map(str),
)
_KEYS = st.sampled_from(
    [
        HV + k
        for k in (
            "cold_plug_vfio",
            "hot_plug_vfio",
            "pcie_root_port",
            "pcie_switch_port",
            "enable_iommu",
            "default_memory",
            "default_vcpus",
            "machine_type",
            "kernel_params",
            "kernel",
            "path",
        )
    ]
    + ["io.katacontainers.config.runtime.vfio_mode", "cdi.k8s.io/x"]
)


# The shared machine is busy; generation speed is not what these tests are about.
RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)


@RELAXED
@given(st.dictionaries(_KEYS, _VALUES, max_size=6))
def test_any_annotations_give_a_valid_config_or_a_config_error(annotations: dict[str, str]) -> None:
    config = KataConfig(path="/q", cold_plug_vfio="root-port", enable_annotations=(".*",))
    try:
        result = apply_annotations(config, annotations, host_cpus=8)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert result.validate() is result


_SCALARS = st.one_of(
    st.booleans(),
    st.integers(-5, 40),
    st.integers(-(10**400), 10**400),
    st.text(max_size=10),
    st.floats(),
    st.lists(st.text(max_size=3), max_size=2),
)


@RELAXED
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "path",
                "machine_type",
                "default_memory",
                "default_vcpus",
                "cold_plug_vfio",
                "hot_plug_vfio",
                "pcie_root_port",
                "enable_iommu",
                "image",
                "initrd",
                "enable_annotations",
            ]
        ),
        _SCALARS,
        max_size=6,
    )
)
def test_any_toml_values_give_a_config_or_a_config_error(values: dict[str, object]) -> None:
    try:
        config = config_from_toml({"hypervisor": {"qemu": values}}, host_cpus=4)
    except ConfigError as exc:
        assert str(exc)
    except KataVfioError as exc:  # pragma: no cover - would be a bug
        pytest.fail(f"unexpected error type {type(exc).__name__}: {exc}")
    else:
        assert config.default_vcpus >= 1 and config.pcie_root_port <= 16


def test_another_hypervisor_loads_with_its_common_keys_and_no_qemu_part(tmp_path: Path) -> None:
    config = load_config(
        _toml(
            tmp_path,
            '[hypervisor.clh]\npath = "/usr/bin/cloud-hypervisor"\nkernel = "/k"\n'
            'cold_plug_vfio = "root-port"\nmachine_type = "pc"\ncpu_features = "pmu=off"\n',
        )
    )
    assert (config.hypervisor, config.qemu) == ("clh", None)
    assert (config.path, config.kernel, config.plug_port) == (
        "/usr/bin/cloud-hypervisor",
        "/k",
        "root-port",
    )
    # machine_type is QEMU's: another hypervisor ignores it, in the file and in annotations.
    enabled = dataclasses.replace(config, enable_annotations=("machine_type",))
    assert apply_annotations(enabled, {HV + "machine_type": "pc"}) == enabled


def test_qemu_settings_must_match_the_hypervisor() -> None:
    with pytest.raises(ConfigError, match="QEMU settings do not match hypervisor 'clh'"):
        KataConfig(hypervisor="clh").validate()
    with pytest.raises(ConfigError, match="hypervisor 'vbox' is not one Kata knows"):
        KataConfig(hypervisor="vbox", qemu=None).validate()


def test_machine_type_annotation_changes_the_qemu_part() -> None:
    config = KataConfig(path="/q", enable_annotations=("machine_type",))
    updated = apply_annotations(config, {HV + "machine_type": "pc"})
    assert updated.qemu == QemuSection(machine_type="pc")
    assert config.qemu == QemuSection()
