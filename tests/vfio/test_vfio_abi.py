"""The Rust core's view of the kernel ABI equals the system headers'.

The core exports every struct size, field offset and size, ioctl number and constant it
uses (``_core.vfio_abi()``); this test compiles ``<linux/vfio.h>`` and ``<linux/iommufd.h>``
with cffi, asks the C compiler for the same numbers and compares each one. The headers come
from Debian's linux-libc-dev (``.ci/run`` installs it); iommufd.h appeared in 6.2 headers,
so its part is skipped, saying so, where the installed headers are older.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from kata_vfio import _core

cffi = pytest.importorskip("cffi", reason="cffi is not installed (pip install cffi)")

INCLUDE = Path("/usr/include")
C_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ABI: dict[str, Any] = _core.vfio_abi()


def header_present(header: str) -> bool:
    return (INCLUDE / header).is_file()


def _items() -> Iterator[tuple[str, str, str]]:
    """(header, kind, name) for everything the core exports."""
    for name, struct in ABI["structs"].items():
        yield struct["header"], "struct", name
    for kind in ("ioctls", "constants"):
        for name, (header, _value) in ABI[kind].items():
            yield header, kind, name


def _c_source(headers: list[str]) -> tuple[str, str]:
    """cdef declarations and C definitions of one accessor per number."""
    decls: list[str] = []
    defs: list[str] = [f"#include <{h}>" for h in headers] + ["#include <stddef.h>"]
    for name, struct in ABI["structs"].items():
        if struct["header"] not in headers:
            continue
        assert C_NAME.match(name)
        decls.append(f"size_t kv_size__{name}(void);")
        defs.append(f"size_t kv_size__{name}(void) {{ return sizeof(struct {name}); }}")
        for field in struct["fields"]:
            assert C_NAME.match(field)
            for what, expr in (
                ("off", f"offsetof(struct {name}, {field})"),
                ("fsize", f"sizeof(((struct {name} *)0)->{field})"),
            ):
                fn = f"kv_{what}__{name}__{field}"
                decls.append(f"size_t {fn}(void);")
                defs.append(f"size_t {fn}(void) {{ return {expr}; }}")
    for kind in ("ioctls", "constants"):
        for name, (header, _value) in ABI[kind].items():
            if header not in headers:
                continue
            assert C_NAME.match(name)
            decls.append(f"unsigned long long kv_{kind}__{name}(void);")
            defs.append(
                f"unsigned long long kv_{kind}__{name}(void) "
                f"{{ return (unsigned long long)({name}); }}"
            )
    return "\n".join(decls), "\n".join(defs)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The accessors, compiled against the system headers."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler (apt-get install gcc)")
    if not header_present("linux/vfio.h"):
        pytest.skip("no <linux/vfio.h>: install linux-libc-dev")
    headers = ["linux/vfio.h"] + (["linux/iommufd.h"] if header_present("linux/iommufd.h") else [])
    decls, defs = _c_source(headers)
    ffi = cffi.FFI()
    ffi.cdef(decls)
    ffi.set_source("_kata_vfio_abi_check", defs)
    workdir = tmp_path_factory.mktemp("abi")
    library = ffi.compile(tmpdir=str(workdir), verbose=False)
    spec = importlib.util.spec_from_file_location("_kata_vfio_abi_check", library)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules.pop("_kata_vfio_abi_check", None)
    return module


def _skip_missing(header: str) -> None:
    if not header_present(header):
        pytest.skip(
            f"<{header}> is not installed (iommufd.h needs linux-libc-dev from Linux 6.2 or "
            "later, e.g. bookworm-backports)"
        )


@pytest.mark.parametrize(("header", "kind", "name"), sorted(set(_items())))
def test_matches_the_system_header(compiled: ModuleType, header: str, kind: str, name: str) -> None:
    _skip_missing(header)
    lib = compiled.lib
    if kind == "struct":
        struct = ABI["structs"][name]
        assert getattr(lib, f"kv_size__{name}")() == struct["size"], f"sizeof(struct {name})"
        for field, (offset, size) in struct["fields"].items():
            assert getattr(lib, f"kv_off__{name}__{field}")() == offset, f"{name}.{field}"
            assert getattr(lib, f"kv_fsize__{name}__{field}")() == size, f"{name}.{field} size"
    else:
        _header, value = ABI[kind][name]
        assert getattr(lib, f"kv_{kind}__{name}")() == value, name


def test_the_table_covers_what_the_lab_measured() -> None:
    # lab.md, measured on 6.12: the legacy numbers and the iommufd ones.
    measured = {
        "VFIO_GET_API_VERSION": 0x3B64,
        "VFIO_CHECK_EXTENSION": 0x3B65,
        "VFIO_SET_IOMMU": 0x3B66,
        "VFIO_GROUP_GET_STATUS": 0x3B67,
        "VFIO_GROUP_SET_CONTAINER": 0x3B68,
        "VFIO_GROUP_UNSET_CONTAINER": 0x3B69,
        "VFIO_GROUP_GET_DEVICE_FD": 0x3B6A,
        "VFIO_DEVICE_GET_INFO": 0x3B6B,
        "VFIO_DEVICE_GET_REGION_INFO": 0x3B6C,
        "VFIO_DEVICE_GET_IRQ_INFO": 0x3B6D,
        "VFIO_DEVICE_RESET": 0x3B6F,
        "VFIO_IOMMU_GET_INFO": 0x3B70,
        "VFIO_IOMMU_MAP_DMA": 0x3B71,
        "VFIO_IOMMU_UNMAP_DMA": 0x3B72,
        "VFIO_DEVICE_BIND_IOMMUFD": 0x3B76,
        "VFIO_DEVICE_ATTACH_IOMMUFD_PT": 0x3B77,
        "IOMMU_IOAS_ALLOC": 0x3B81,
        "IOMMU_IOAS_MAP": 0x3B85,
        "IOMMU_IOAS_UNMAP": 0x3B86,
    }
    assert {name: ABI["ioctls"][name][1] for name in measured} == measured


def test_every_struct_starts_with_its_size_field() -> None:
    # The argsz/size protocol: the kernel reads the first u32 to learn the buffer length.
    for name, struct in ABI["structs"].items():
        first = min(struct["fields"].items(), key=lambda item: item[1][0])
        if first[0] in ("argsz", "size"):
            assert first[1] == (0, 4), name
