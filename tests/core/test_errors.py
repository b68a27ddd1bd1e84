"""One exception hierarchy: every exception the package defines is a ``KataVfioError`` and is
drawn in ``errors.py``'s docstring; the bindings declare each Python class they raise once
and convert core errors into it with errno, path and hint kept."""

from __future__ import annotations

import errno
import importlib
import inspect
import os
import pkgutil
import re
from pathlib import Path

import pytest

import kata_vfio
from kata_vfio import errors
from kata_vfio._core import Bdf, DmaBuffer, VfioGroup
from kata_vfio.errors import (
    BdfError,
    BindError,
    HandleError,
    HostIOError,
    InvalidInputError,
    KataVfioError,
)

BINDINGS = Path(__file__).resolve().parents[2] / "rust/kata-vfio-py/src"


def _package_exceptions() -> dict[str, type[BaseException]]:
    """Every public exception class defined in a module of the package."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(kata_vfio.__path__, "kata_vfio."):
        if ".testing" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not name.startswith("_")
            ):
                found[f"{info.name}.{name}"] = value
    return found


def test_every_exception_is_a_kata_vfio_error_and_is_in_the_drawn_tree() -> None:
    found = _package_exceptions()
    assert len(found) >= 20, sorted(found)
    outside = sorted(name for name, cls in found.items() if not issubclass(cls, KataVfioError))
    assert outside == []
    doc = errors.__doc__ or ""
    undrawn = sorted(name for name, cls in found.items() if cls.__name__ not in doc)
    assert undrawn == []
    for name in errors.__all__:
        assert re.search(rf"\+-- {name}\b|^    {name}$", doc, re.M), name


def test_os_failures_are_os_errors_with_errno_and_path() -> None:
    assert issubclass(BindError, OSError) and issubclass(BindError, HostIOError)
    assert issubclass(HandleError, ValueError)
    exc = BindError("writing failed", errno=errno.EBUSY, path="/sys/x", hint="retry")
    assert (exc.errno, exc.filename, exc.hint, str(exc)) == (
        errno.EBUSY,
        "/sys/x",
        "retry",
        "writing failed",
    )


def test_the_core_raises_the_same_classes() -> None:
    with pytest.raises(BdfError) as bad:
        Bdf("0000:01:00.0/../..")
    assert bad.value.hint is not None
    with pytest.raises(InvalidInputError, match="DMA buffer size"):
        DmaBuffer(100)
    with pytest.raises(InvalidInputError, match="file descriptor"):
        VfioGroup.from_fd(-1, 12, "/dev/vfio/12")
    read, write = os.pipe()
    os.close(read)
    os.close(write)
    with pytest.raises(HostIOError) as closed_fd:
        VfioGroup.from_fd(read, 12, "/dev/vfio/12")
    assert closed_fd.value.errno == errno.EBADF
    with open(os.devnull, "rb") as null:
        group = VfioGroup.from_fd(null.fileno(), 12, "/dev/vfio/12")
    group.close()
    with pytest.raises(HandleError, match="closed VFIO group"):
        group.status()


def test_the_bindings_declare_each_exception_once_and_look_none_up_by_name() -> None:
    sources = {p.name: p.read_text() for p in BINDINGS.glob("*.rs")}
    declared = [
        name
        for text in sources.values()
        for name in re.findall(r"import_exception!\(kata_vfio\.errors, (\w+)\)", text)
    ]
    assert len(declared) == len(set(declared)), declared
    assert set(declared) <= set(errors.__all__)
    assert set(declared) >= {"BdfError", "BindError", "HostIOError", "VfioError", "HandleError"}
    for name, text in sources.items():
        assert 'import("kata_vfio.errors")' not in text, name
        assert "PyValueError" not in text and "PyRuntimeError" not in text, name
