"""Trust boundaries of CDI spec files and of the directories the tool creates."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from kata_vfio import _atomic, _trust
from kata_vfio.cdi import Registry
from kata_vfio.errors import HostIOError

Write = Callable[[Path, str], Path]
FOREIGN_UID = 4242


def spec_text(kind: str, name: str) -> str:
    return (
        f"cdiVersion: 0.3.0\nkind: {kind}\ndevices:\n"
        f"- name: {name}\n  containerEdits:\n    env: [A=1]\n"
    )


@pytest.fixture
def make_foreign() -> Callable[[Path], None]:
    """Gives a path to another user (only root can)."""
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")

    def make(path: Path) -> None:
        os.chown(path, FOREIGN_UID, -1, follow_symlinks=False)

    return make


def loaded(registry: Registry) -> tuple[str, ...]:
    return registry.device_names()


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o777])
def test_spec_files_writable_by_others_are_refused_and_named(
    spec_dirs: list[Path], write_file: Write, mode: int
) -> None:
    good = write_file(spec_dirs[0] / "good.yaml", spec_text("v.com/c", "good"))
    bad = write_file(spec_dirs[0] / "bad.yaml", spec_text("v.com/c", "bad"))
    bad.chmod(mode)
    registry = Registry(spec_dirs)
    assert loaded(registry) == ("v.com/c=good",)
    (message,) = registry.errors[str(bad)]
    assert message.startswith(f"refusing CDI spec {bad}: it is writable by")
    assert f"mode {mode:04o}" in message
    assert str(good) not in registry.errors
    bad.chmod(0o644)
    registry.refresh()
    assert loaded(registry) == ("v.com/c=bad", "v.com/c=good")
    assert registry.errors == {}


def test_spec_files_of_other_users_are_refused(
    spec_dirs: list[Path], write_file: Write, make_foreign: Callable[[Path], None]
) -> None:
    bad = write_file(spec_dirs[1] / "bad.json", spec_text("v.com/c", "bad"))
    make_foreign(bad)
    write_file(spec_dirs[0] / "good.yaml", spec_text("v.com/c", "good"))
    registry = Registry(spec_dirs)
    assert loaded(registry) == ("v.com/c=good",)
    assert registry.errors[str(bad)] == (
        f"refusing CDI spec {bad}: it is owned by uid {FOREIGN_UID}, not root (a spec can make "
        "the runtime run hooks as root: make it owned by root and not writable by its group or "
        "others)",
    )


def test_a_symlinked_spec_is_judged_by_its_target(
    tmp_path: Path, spec_dirs: list[Path], write_file: Write
) -> None:
    target = write_file(tmp_path / "elsewhere" / "t.yaml", spec_text("v.com/c", "linked"))
    (spec_dirs[0] / "link.yaml").symlink_to(target)
    registry = Registry(spec_dirs)
    assert loaded(registry) == ("v.com/c=linked",)
    target.chmod(0o666)
    registry.refresh()
    assert loaded(registry) == ()
    assert "writable by" in registry.errors[str(spec_dirs[0] / "link.yaml")][0]


@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777, 0o777])
def test_spec_directories_writable_by_others_are_refused(
    spec_dirs: list[Path], write_file: Write, mode: int
) -> None:
    low, high = spec_dirs
    write_file(low / "a.yaml", spec_text("v.com/c", "low"))
    write_file(high / "b.yaml", spec_text("v.com/c", "high"))
    low.chmod(mode)
    registry = Registry(spec_dirs)
    assert loaded(registry) == ("v.com/c=high",)
    message = registry.dir_errors[str(low)]
    assert message.startswith(f"refusing CDI spec directory {low}: it is writable by")
    assert "its specs are not loaded" in message
    assert registry.errors[str(low)] == (message,)


def test_a_writable_directory_above_taints_the_spec_directory(
    tmp_path: Path, write_file: Write
) -> None:
    above = tmp_path / "shared"
    spec_dir = above / "cdi"
    write_file(spec_dir / "a.yaml", spec_text("v.com/c", "a"))
    above.chmod(0o777)  # anyone could rename cdi away and put their own in its place
    registry = Registry([spec_dir])
    assert loaded(registry) == ()
    assert (
        f"the directory {above} above it: it is writable by" in registry.dir_errors[str(spec_dir)]
    )
    above.chmod(0o1777)  # sticky, like /tmp: nobody can replace what is not theirs
    registry.refresh()
    assert loaded(registry) == ("v.com/c=a",)


def test_a_spec_directory_of_another_user_is_refused(
    tmp_path: Path, write_file: Write, make_foreign: Callable[[Path], None]
) -> None:
    spec_dir = tmp_path / "cdi"
    write_file(spec_dir / "a.yaml", spec_text("v.com/c", "a"))
    make_foreign(spec_dir)
    registry = Registry([spec_dir])
    assert loaded(registry) == ()
    assert "owned by uid" in registry.dir_errors[str(spec_dir)]


def test_directories_get_their_modes_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        target = tmp_path / "a" / "b" / "c"
        _trust.make_directories(str(target), mode=0o700, parents_mode=0o755)
        _atomic.atomic_write(str(tmp_path / "x" / "y" / "f"), b"data", create_parents=True)
    finally:
        os.umask(old)
    modes = {
        p: stat.S_IMODE(p.stat().st_mode)
        for p in (
            tmp_path / "a",
            tmp_path / "a" / "b",
            target,
            tmp_path / "x",
            tmp_path / "x" / "y",
        )
    }
    assert modes == {
        tmp_path / "a": 0o755,
        tmp_path / "a" / "b": 0o755,
        target: 0o700,
        tmp_path / "x": 0o755,
        tmp_path / "x" / "y": 0o755,
    }
    assert stat.S_IMODE((tmp_path / "x" / "y" / "f").stat().st_mode) == 0o644


def test_existing_directories_are_checked_and_keep_their_mode(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(
        HostIOError, match=rf"refusing to use directory {shared}: .*writable"
    ) as info:
        _trust.make_directories(str(shared / "mine"), mode=0o700)
    assert info.value.errno == errno.EPERM
    assert not (shared / "mine").exists(), "nothing is created below an untrusted directory"
    with pytest.raises(HostIOError, match="refusing to use directory"):
        _atomic.atomic_write(str(shared / "d" / "f"), b"x", create_parents=True)
    shared.chmod(0o1777)
    _trust.make_directories(str(shared / "mine"), mode=0o700)
    assert stat.S_IMODE((shared / "mine").stat().st_mode) == 0o700
    (shared / "mine").chmod(0o711)
    _trust.make_directories(str(shared / "mine"), mode=0o700)
    assert stat.S_IMODE((shared / "mine").stat().st_mode) == 0o711


def test_files_and_links_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(HostIOError, match="cannot open directory") as info:
        _trust.make_directories(str(tmp_path / "file" / "d"), mode=0o755)
    assert info.value.errno == errno.ENOTDIR
    # An existing link to a trusted directory is followed (like /var/run -> /run) ...
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    _trust.make_directories(str(tmp_path / "link" / "d"), mode=0o750)
    assert stat.S_IMODE((tmp_path / "real" / "d").stat().st_mode) == 0o750
    # ... and judged by what it points to.
    (tmp_path / "open").mkdir()
    (tmp_path / "open").chmod(0o777)
    (tmp_path / "sneaky").symlink_to(tmp_path / "open")
    with pytest.raises(HostIOError, match="refusing to use directory"):
        _trust.make_directories(str(tmp_path / "sneaky" / "d"), mode=0o755)


def test_untrusted_reason_names_who_may_write() -> None:
    st = os.stat("/")
    assert _trust.untrusted_reason(st) is None
    fake = os.stat_result((stat.S_IFDIR | 0o1777, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert _trust.untrusted_reason(fake) == "it is writable by its group and others (mode 1777)"
    assert _trust.untrusted_reason(fake, sticky_ok=True) is None
    regular = os.stat_result((stat.S_IFREG | 0o1666, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert _trust.untrusted_reason(regular, sticky_ok=True) is not None
    other = os.stat_result((stat.S_IFREG | 0o644, 0, 0, 0, FOREIGN_UID, 0, 0, 0, 0, 0))
    reason = _trust.untrusted_reason(other)
    assert reason is not None and reason.startswith(f"it is owned by uid {FOREIGN_UID}, not root")
