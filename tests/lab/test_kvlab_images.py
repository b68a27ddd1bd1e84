"""The lab's image builders: the cpio writer, module load order, kernel config checks."""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kvlab import cpio, kconfig
from kvlab.ci import in_ci, lab_unavailable
from kvlab.errors import LabError
from kvlab.modules import ModuleIndex, module_name

# In CI the test runs anyway, so a missing cpio fails it (kvlab.ci).
needs_cpio = pytest.mark.skipif(
    shutil.which("cpio") is None and not in_ci(os.environ), reason="cpio (GNU cpio) missing"
)


def _extract(image: bytes, into: Path) -> None:
    into.mkdir()
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        input=image,
        cwd=into,
        check=True,
    )


@needs_cpio
def test_cpio_lists_what_gnu_cpio_reads(tmp_path: Path) -> None:
    image = cpio.archive(
        [
            cpio.directory("bin"),
            cpio.file("bin/busybox", b"\x7fELF...", 0o755),
            cpio.symlink("bin/sh", "busybox"),
            cpio.char_device("dev/console", 5, 1),
            cpio.directory("dev"),
            cpio.file("init", b"#!/bin/busybox sh\n", 0o755),
        ]
    )
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=image, capture_output=True, check=True
    ).stdout.decode()
    rows = {
        line.split()[-1] if "->" not in line else line.split()[-3]: line
        for line in listing.splitlines()
    }
    assert sorted(rows) == ["bin", "bin/busybox", "bin/sh", "dev", "dev/console", "init"]
    assert rows["bin"].startswith("drwxr-xr-x")
    assert rows["bin/busybox"].startswith("-rwxr-xr-x")
    assert rows["bin/sh"].startswith("lrwxrwxrwx")
    assert rows["bin/sh"].endswith("-> busybox")
    assert rows["dev/console"].startswith("crw-------")
    assert " 5,   1 " in rows["dev/console"] or " 5, 1 " in rows["dev/console"]


_names = st.text(alphabet="abcdefghij0123456789._-", min_size=1, max_size=8).filter(
    lambda n: n not in (".", "..")
)


@needs_cpio
@settings(max_examples=25, deadline=None)
@given(
    files=st.dictionaries(
        st.tuples(st.sampled_from(["", "etc", "lib/modules"]), _names),
        st.binary(max_size=300),
        min_size=1,
        max_size=6,
    )
)
def test_cpio_round_trips_through_gnu_cpio(
    tmp_path_factory: pytest.TempPathFactory, files: dict[tuple[str, str], bytes]
) -> None:
    entries = [cpio.directory("etc"), cpio.directory("lib"), cpio.directory("lib/modules")]
    wanted = {}
    for (folder, name), data in files.items():
        path = f"{folder}/{name}" if folder else name
        if path in ("etc", "lib"):
            continue
        wanted[path] = data
        entries.append(cpio.file(path, data, 0o640))
    into = tmp_path_factory.mktemp("x") / "root"
    _extract(cpio.archive(entries), into)
    for path, data in wanted.items():
        assert (into / path).read_bytes() == data
        assert stat.S_IMODE((into / path).stat().st_mode) == 0o640


def test_cpio_is_reproducible_and_order_free() -> None:
    a = [cpio.file("b", b"2"), cpio.directory("a"), cpio.file("a/x", b"1")]
    assert cpio.gzipped(a) == cpio.gzipped(list(reversed(a)))
    assert gzip.decompress(cpio.gzipped(a)) == cpio.archive(a)
    assert len(cpio.archive(a)) % 4 == 0


@pytest.mark.parametrize("bad", ["", "/init", "../x", "a/../b", "a//b", "./a", "a/."])
def test_cpio_refuses_paths_that_escape_or_are_not_normal(bad: str) -> None:
    with pytest.raises(ValueError, match="relative and normalised"):
        cpio.file(bad, b"")


def test_cpio_refuses_the_same_path_twice() -> None:
    with pytest.raises(ValueError, match="given twice"):
        cpio.archive([cpio.file("a", b"1"), cpio.file("a", b"2")])


def _module_tree(tmp_path: Path, dep: str, builtin: str = "") -> ModuleIndex:
    directory = tmp_path / "lib" / "modules" / "6.12.0-test"
    directory.mkdir(parents=True)
    (directory / "modules.dep").write_text(dep)
    (directory / "modules.builtin").write_text(builtin)
    return ModuleIndex.load(directory)


def test_module_order_puts_dependencies_first_and_skips_builtins(tmp_path: Path) -> None:
    index = _module_tree(
        tmp_path,
        "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/net/9p/9pnet-virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n"
        "kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/fs/netfs/netfs.ko.xz:\n"
        "kernel/fs/overlayfs/overlay.ko.xz:\n",
        builtin="kernel/drivers/virtio/virtio_pci.ko\n",
    )
    order = index.load_order(["virtio_pci", "9pnet-virtio", "9p", "overlay"])
    assert order == ["netfs", "9pnet", "9pnet_virtio", "9p", "overlay"]


def test_module_order_reports_unknown_modules_and_cycles(tmp_path: Path) -> None:
    index = _module_tree(tmp_path, "a.ko: b.ko\nb.ko: a.ko\n")
    with pytest.raises(LabError, match="cycle: a -> b -> a"):
        index.load_order(["a"])
    with pytest.raises(LabError, match="neither built into nor shipped"):
        index.load_order(["e1000e"])


def test_module_tree_without_depmod_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(LabError, match=r"modules\.dep is missing") as info:
        ModuleIndex.load(tmp_path)
    assert "depmod" in (info.value.hint or "")


def test_modules_are_decompressed(tmp_path: Path) -> None:
    import lzma

    index = _module_tree(tmp_path, "kernel/a-b.ko.xz:\nkernel/c.ko:\n")
    (index.directory / "kernel").mkdir()
    (index.directory / "kernel" / "a-b.ko.xz").write_bytes(lzma.compress(b"ELF a"))
    (index.directory / "kernel" / "c.ko").write_bytes(b"ELF c")
    assert index.read("a_b") == b"ELF a"
    assert index.read("c") == b"ELF c"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("kernel/net/9p/9pnet-virtio.ko.xz", "9pnet_virtio"),
        ("vfio-pci.ko.zst", "vfio_pci"),
        ("a.ko.gz", "a"),
        ("b.ko", "b"),
    ],
)
def test_module_names_are_canonical(path: str, name: str) -> None:
    assert module_name(path) == name


def test_real_debian_module_order_matches_modprobe() -> None:
    """Differential: the lab's resolver against kmod's own, on the cached Debian kernel.

    Both orders must load the same modules with each after its dependencies; the exact order
    among independent modules may differ. Soft dependencies (vfio's) are modprobe's extra,
    not needed to insmod, so modules that have them are not compared.
    """
    from kvlab import cache

    trees = sorted((cache.DEFAULT_ROOT / "kernels").glob("debian-*/lib/modules/*/modules.dep"))
    if not trees or shutil.which("modprobe") is None:
        lab_unavailable(
            "no cached Debian kernel (tools/lab/lab kernel debian) or no modprobe", os.environ
        )
    directory = trees[-1].parent
    index = ModuleIndex.load(directory)
    root = str(directory.parents[2])
    for wanted in ("9p", "9pnet_virtio", "overlay", "e1000e"):
        out = subprocess.run(
            ["modprobe", "-d", root, "-S", directory.name, "--show-depends", wanted],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        theirs = [
            module_name(row.split()[1]) for row in out.splitlines() if row.startswith("insmod")
        ]
        ours = index.load_order([wanted])
        assert sorted(ours) == sorted(theirs), wanted
        for position, name in enumerate(ours):
            assert set(index.depends[name]) <= set(ours[:position]), f"{name} before its deps"


def test_kconfig_parses_set_unset_and_reports_what_did_not_land() -> None:
    text = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="-lab"\n# comment\n\nCONFIG_D=m\n'
    got = kconfig.parse(text, source="x")
    assert got == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"-lab"', "CONFIG_D": "m"}
    wanted = {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_D": "y", "CONFIG_E": "y"}
    assert kconfig.missing(wanted, got) == [
        "CONFIG_D: wanted y, got m",
        "CONFIG_E: wanted y, got n",
    ]


def test_kconfig_names_the_bad_line() -> None:
    with pytest.raises(LabError, match=r"frag:2: not a kernel config line"):
        kconfig.parse("CONFIG_A=y\nIOMMUFD=y\n", source="frag")


def test_the_lab_fragment_asks_for_iommufd_and_the_vfio_cdev() -> None:
    wanted = kconfig.parse(kconfig.fragment_path().read_text(), source="fragment")
    for option in ("IOMMUFD", "VFIO_DEVICE_CDEV", "VFIO_CONTAINER", "VFIO_PCI", "INTEL_IOMMU"):
        assert wanted[f"CONFIG_{option}"] == "y"


_option = st.from_regex(r"CONFIG_[A-Z0-9_]{1,20}", fullmatch=True)
_value = st.one_of(
    st.sampled_from(["y", "m", "n"]),
    st.integers(0, 1 << 20).map(str),
    st.text(alphabet="abc-_.0123", max_size=8).map(lambda t: f'"{t}"'),
)


@given(st.dictionaries(_option, _value, max_size=20))
def test_kconfig_parses_what_kconfig_writes(options: dict[str, str]) -> None:
    lines = [
        f"# {name} is not set" if value == "n" else f"{name}={value}"
        for name, value in options.items()
    ]
    text = "#\n# Automatically generated\n#\n" + "\n".join(lines) + "\n"
    assert kconfig.parse(text, source=".config") == options
    assert kconfig.missing(options, kconfig.parse(text, source=".config")) == []


@given(st.text(max_size=300))
def test_kconfig_parse_raises_only_lab_errors(text: str) -> None:
    try:
        kconfig.parse(text, source="x")
    except LabError as exc:
        assert "x:" in exc.message


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_module_order_is_a_complete_topological_order(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    count = data.draw(st.integers(1, 12))
    names = [f"m{i}" for i in range(count)]
    # Module i may depend only on modules with a smaller index: a DAG, as depmod writes.
    direct = {
        name: data.draw(st.sets(st.sampled_from(names[:i])) if i else st.just(set()))
        for i, name in enumerate(names)
    }

    def closure(name: str) -> set[str]:
        found: set[str] = set()
        for dep in direct[name]:
            found |= {dep} | closure(dep)
        return found

    dep_text = "".join(
        f"kernel/{n}.ko.xz:{''.join(f' kernel/{d}.ko.xz' for d in sorted(closure(n)))}\n"
        for n in names
    )
    index = _module_tree(tmp_path_factory.mktemp("mods"), dep_text)
    wanted = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=4))
    order = index.load_order(wanted)
    assert len(order) == len(set(order))
    assert set(order) == set(wanted).union(*(closure(w) for w in wanted))
    for position, name in enumerate(order):
        assert closure(name) <= set(order[:position])


@given(st.text(max_size=300))
def test_modules_dep_parser_raises_only_lab_errors(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            index = _module_tree(Path(tmp), text)
        except LabError:
            return
        for name in list(index.files)[:3]:
            with contextlib.suppress(LabError):
                index.load_order([name])


def test_static_busybox_and_dynamic_binaries_are_told_apart() -> None:
    from kvlab.initramfs import is_dynamic_elf

    busybox = shutil.which("busybox")
    if busybox is None:
        lab_unavailable("busybox is not installed (Debian package busybox-static)", os.environ)
    assert is_dynamic_elf(Path(busybox).read_bytes()) is False
    assert is_dynamic_elf(Path(sys.executable).resolve().read_bytes()) is True
    with pytest.raises(LabError, match="not a 64-bit"):
        is_dynamic_elf(b"#!/bin/sh\n")
    with pytest.raises(LabError, match="truncated"):
        is_dynamic_elf(b"\x7fELF\x02\x01\x01" + bytes(20))
