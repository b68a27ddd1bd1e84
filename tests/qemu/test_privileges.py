"""What QEMU runs with: the user it drops to, its seccomp filter, its environment, its
memlock limit; the choices as pure functions and their effect on the real QEMU."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import resource
import stat
from pathlib import Path

import pytest
from emulated_vm import emulated, planned
from hypothesis import given, settings
from hypothesis import strategies as st
from sandbox_hosts import Zoo, oci_spec

from kata_vfio import Bdf
from kata_vfio.cli import main
from kata_vfio.errors import InvalidInputError, PlanError, QemuError, QmpError
from kata_vfio.kata.config import KataConfig
from kata_vfio.kata.run import run_sandbox
from kata_vfio.qemu.argv import QemuCommand, QemuOpts
from kata_vfio.qemu.fds import PassedDevice, QemuFds
from kata_vfio.qemu.hotplug import group_request
from kata_vfio.qemu.launcher import QemuProcess
from kata_vfio.qemu.privileges import (
    MINIMAL_ENV,
    QemuUser,
    denies_privilege_change,
    drop_plan,
    parse_qemu_version,
    parse_seccomp_sandbox,
    qemu_version,
    resolve_user,
)
from kata_vfio.qemu.qmp import (
    HotplugFunction,
    HotplugRequest,
    QmpSession,
    hotplug,
    port_occupancy,
)
from kata_vfio.qemu.run import VmStarted
from kata_vfio.vm.hotplug import HotplugGroup, SlotFunction

KATA_RECOMMENDED = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
NOBODY = QemuUser(uid=65534, gid=65534, groups=(65534,))
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root can start QEMU as another user"
)


# The choices, pure.


def test_kata_sandbox_settings_become_the_sandbox_option() -> None:
    opts = parse_seccomp_sandbox(KATA_RECOMMENDED)
    assert opts is not None and opts.render() == KATA_RECOMMENDED
    assert denies_privilege_change(opts)
    assert parse_seccomp_sandbox("") is None and parse_seccomp_sandbox("  ") is None
    assert parse_seccomp_sandbox("enable=on, spawn=deny").render() == "on,spawn=deny"  # type: ignore[union-attr]
    assert not denies_privilege_change(parse_seccomp_sandbox("on,elevateprivileges=allow"))
    assert denies_privilege_change(parse_seccomp_sandbox("on,elevateprivileges=children"))
    assert not denies_privilege_change(parse_seccomp_sandbox("off,elevateprivileges=deny"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("yes", "the first item must be on or off"),
        ("on,spawn=maybe", "'spawn=maybe' is not a sandbox setting"),
        ("on,spawn", "'spawn' is not a sandbox setting"),
        ("on,fork=deny", "'fork=deny' is not a sandbox setting"),
        ("on,spawn=deny,spawn=allow", "spawn is given twice"),
        ("on,,spawn=deny", "'' is not a sandbox setting"),
        ("on,spawn=deny\n-device", "is not a sandbox setting"),
    ],
)
def test_bad_sandbox_settings_are_refused_naming_the_key(text: str, problem: str) -> None:
    with pytest.raises(InvalidInputError, match="seccompsandbox") as info:
        parse_seccomp_sandbox(text)
    assert problem in str(info.value)
    assert info.value.hint


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="onfelvatiprgsdcwyh=,|\n -", max_size=40))
def test_sandbox_settings_parse_back_to_themselves_or_are_refused(text: str) -> None:
    try:
        opts = parse_seccomp_sandbox(text)
    except InvalidInputError:
        return
    if opts is not None:
        rendered = opts.render()
        assert "\n" not in rendered and " " not in rendered
        assert parse_seccomp_sandbox(rendered) == opts


def test_how_qemu_gets_to_the_user() -> None:
    deny = parse_seccomp_sandbox(KATA_RECOMMENDED)
    allow = parse_seccomp_sandbox("on,obsolete=deny")
    named = QemuUser(uid=1000, gid=1000, groups=(1000, 108), name="kata")
    assert drop_plan(named, version=(10, 0), sandbox=allow).option == ("-run-with", "user=kata")
    assert drop_plan(NOBODY, version=(9, 1), sandbox=None).option == (
        "-run-with",
        "user=65534:65534",
    )
    assert drop_plan(named, version=(9, 0), sandbox=None).option == ("-runas", "kata")
    # A filter that kills a process changing its user: QEMU is started as the user instead.
    exec_plan = drop_plan(named, version=None, sandbox=deny)
    assert (exec_plan.mode, exec_plan.option) == ("exec", None)
    with pytest.raises(QemuError, match="version is needed"):
        drop_plan(named, version=None, sandbox=allow)


def test_qemu_versions_are_read_from_its_banner() -> None:
    banner = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)\nCopyright (c) 2003-2025"
    assert parse_qemu_version(banner) == (10, 0)
    assert parse_qemu_version("QEMU emulator version 9.1.50") == (9, 1)
    assert parse_qemu_version("QEMU emulator version 8.2") == (8, 2)
    assert parse_qemu_version("version " + "9" * 5000 + ".1") is None
    assert parse_qemu_version("not qemu") is None


def _unprivileged_entry() -> pwd.struct_passwd:
    for entry in pwd.getpwall():
        if entry.pw_uid != 0 and entry.pw_gid != 0 and entry.pw_name.isidentifier():
            return entry
    pytest.skip("no unprivileged user in this machine's user database")


def test_users_are_resolved_and_root_is_refused() -> None:
    entry = _unprivileged_entry()
    by_name = resolve_user(entry.pw_name)
    assert (by_name.uid, by_name.gid, by_name.name) == (entry.pw_uid, entry.pw_gid, entry.pw_name)
    assert entry.pw_gid in by_name.groups
    assert by_name.qemu_value == entry.pw_name
    by_uid = resolve_user(str(entry.pw_uid))
    assert (by_uid.uid, by_uid.gid, by_uid.name) == (entry.pw_uid, entry.pw_gid, None)
    numbers = resolve_user("4242:4343")
    assert (numbers.uid, numbers.gid, numbers.groups, numbers.qemu_value) == (
        4242,
        4343,
        (4343,),
        "4242:4343",
    )
    for text, problem in (
        ("root", "root"),
        ("0", "root"),
        ("0:0", "root"),
        ("4242:0", "root"),
        ("no-such-user-kata-vfio", "does not exist"),
        ("kata,chroot=/", "not a valid user name"),
        ("user=x", "not a valid user name"),
        ("1:2:3", "not UID:GID"),
        ("9" * 5000 + ":1", "not UID:GID"),
        ("4294967295:1", "not UID:GID"),
        ("", "not a valid user name"),
    ):
        with pytest.raises(InvalidInputError, match=problem):
            resolve_user(text)


def test_the_version_of_something_that_is_not_qemu(tmp_path: Path) -> None:
    with pytest.raises(QemuError, match="cannot ask"):
        qemu_version(str(tmp_path / "missing"))
    with pytest.raises(QemuError, match="did not say which QEMU"):
        qemu_version("/bin/true")


# The real QEMU.


def _bare(qemu: str, *extra: tuple[str, str | None]) -> QemuCommand:
    base: tuple[tuple[str, str | None], ...] = (
        ("-machine", "q35"),
        ("-accel", "tcg"),
        ("-nodefaults", None),
        ("-display", "none"),
        ("-S", None),
    )
    return QemuCommand(qemu).extend([*base, *extra])


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _memlock_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max locked memory"):
            return " ".join(line.split()[3:5])
    raise AssertionError("no memlock line")


@pytest.mark.qemu
def test_the_real_qemu_knows_its_version_and_takes_the_kata_sandbox(qemu_binary: str) -> None:
    assert qemu_version(qemu_binary) >= (2, 0)
    sandbox = parse_seccomp_sandbox(KATA_RECOMMENDED)
    assert sandbox is not None
    with QemuProcess(_bare(qemu_binary, ("-sandbox", sandbox.render()))) as vm:
        assert vm.qmp.execute("query-status")["status"] == "prelaunch"
        assert "-sandbox" in vm.argv and KATA_RECOMMENDED in vm.argv
        # Seccomp mode 2 (filter) is on in QEMU's main thread.
        assert _status(vm.pid or 0)["Seccomp"].strip() == "2"


@pytest.mark.qemu
def test_qemu_gets_a_minimal_environment(qemu_binary: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LD_PRELOAD_NOT_REALLY", "/tmp/evil.so")
    monkeypatch.setenv("MODPROBE_OPTIONS", "-C /tmp/evil.conf")
    with QemuProcess(_bare(qemu_binary), env={"QEMU_EXTRA": "1"}) as vm:
        environ = Path(f"/proc/{vm.pid}/environ").read_bytes().split(b"\0")
    expected = {f"{k}={v}".encode() for k, v in MINIMAL_ENV.items()} | {b"QEMU_EXTRA=1"}
    assert {e for e in environ if e} == expected
    with pytest.raises(InvalidInputError, match="not a plain NAME=value"):
        QemuProcess(_bare(qemu_binary), env={"A=B": "x"})


@pytest.mark.qemu
@needs_root
def test_qemu_drops_to_the_user_itself(qemu_binary: str) -> None:
    with QemuProcess(_bare(qemu_binary), user=NOBODY) as vm:
        assert vm.drop is not None
        expected = "run-with" if qemu_version(qemu_binary) >= (9, 1) else "runas"
        assert vm.drop.mode == expected
        assert vm.qmp.execute("query-status")["status"] == "prelaunch"
        uids = _status(vm.pid or 0)["Uid"].split()
        gids = _status(vm.pid or 0)["Gid"].split()
        assert set(uids) == {"65534"} and set(gids) == {"65534"}
        assert _status(vm.pid or 0)["Groups"].split() == ["65534"]


@pytest.mark.qemu
@needs_root
def test_a_filter_that_forbids_the_drop_starts_qemu_as_the_user(qemu_binary: str) -> None:
    # With elevateprivileges=deny, QEMU's own setuid would be killed by its filter (SIGSYS).
    command = _bare(qemu_binary, ("-sandbox", KATA_RECOMMENDED))
    with QemuProcess(command, user=NOBODY) as vm:
        assert vm.drop is not None and vm.drop.mode == "exec"
        assert "-run-with" not in vm.argv and "-runas" not in vm.argv
        assert vm.qmp.execute("query-status")["status"] == "prelaunch"
        assert set(_status(vm.pid or 0)["Uid"].split()) == {"65534"}
        # QEMU got its sockets as fds: the runtime directory stays root's and private.
        owner = os.stat(vm.runtime_dir)
        assert (owner.st_uid, stat.S_IMODE(owner.st_mode)) == (0, 0o700)
        assert Path(vm.path("qemu.pid")).read_text() == f"{vm.pid}\n"
        assert "-pidfile" not in vm.argv
    assert vm.stopped_by == "quit"


def _can_raise_memlock() -> bool:
    before = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (before[0], before[1] + 4096))
    except (OSError, ValueError):
        return False
    resource.setrlimit(resource.RLIMIT_MEMLOCK, before)
    return True


@pytest.mark.qemu
def test_memlock_is_raised_for_qemu_only(qemu_binary: str, tmp_path: Path) -> None:
    before = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if resource.RLIM_INFINITY in before:
        pytest.skip("this process's memlock limit is unlimited already")
    limit = before[1] + (3 << 30)
    vm = QemuProcess(_bare(qemu_binary), memlock=limit, runtime_parent=str(tmp_path))
    if not _can_raise_memlock():
        # Without CAP_SYS_RESOURCE (a container, a plain user): a clear error, nothing left.
        with pytest.raises(QemuError, match="cannot raise RLIMIT_MEMLOCK") as info:
            vm.start()
        assert "CAP_SYS_RESOURCE" in (info.value.hint or "")
        assert list(tmp_path.iterdir()) == [] and vm.pid is None
    else:
        with vm:
            assert _memlock_of(vm.pid or 0) == f"{limit} {limit}"
    assert resource.getrlimit(resource.RLIMIT_MEMLOCK) == before
    with pytest.raises(InvalidInputError, match="negative"):
        QemuProcess(_bare(qemu_binary), memlock=-1)


@pytest.mark.qemu
def test_fds_are_handed_to_qemu_by_name_and_released(qemu_binary: str) -> None:
    with QemuProcess(_bare(qemu_binary)) as vm:
        read_end, write_end = os.pipe()
        try:
            vm.qmp.pass_fd(read_end, "handed0")
            vm.qmp.execute("closefd", {"fdname": "handed0"})  # QEMU held its own copy
            with pytest.raises(QmpError, match="closefd"):
                vm.qmp.execute("closefd", {"fdname": "handed0"})
            with pytest.raises(InvalidInputError, match="fd name"):
                vm.qmp.pass_fd(read_end, "bad name")
        finally:
            os.close(read_end)
            os.close(write_end)


@pytest.mark.qemu
def test_a_cdev_hotplug_passes_its_fds_and_rolls_back_when_qemu_refuses(qemu_binary: str) -> None:
    """The iommufd object is created from a passed fd and the device names its passed fd
    instead of a host address; a pipe is no VFIO cdev, so QEMU refuses the device: nothing is
    left behind (no device, no object, no named fd)."""
    port = QemuOpts.of(
        "pcie-root-port", ("id", "rp0"), ("bus", "pcie.0"), ("addr", "08.0"), ("chassis", 1)
    )
    with QemuProcess(_bare(qemu_binary).add("-device", port)) as vm:
        read_end, write_end = os.pipe()
        try:
            request = HotplugRequest(
                slots=(
                    (
                        HotplugFunction(
                            "hostdev-x", 0, props=(("iommufd", "iommufd-x"), ("fd", "dev-x"))
                        ),
                    ),
                ),
                iommufd="iommufd-x",
                fds=(("iommu-x", read_end), ("dev-x", write_end)),
                iommufd_fd="iommu-x",
            )
            with pytest.raises(QmpError, match="device_add") as info:
                hotplug(vm.qmp, request)
            assert "bind device fd" in str(info.value) or "ioctl" in str(info.value)
            objects = {e["name"] for e in vm.qmp.execute("qom-list", {"path": "/objects"})}
            assert "iommufd-x" not in objects
            assert port_occupancy(vm.qmp) == {}
            for name in ("iommu-x", "dev-x"):
                with pytest.raises(QmpError, match="closefd"):
                    vm.qmp.execute("closefd", {"fdname": name})
        finally:
            os.close(read_end)
            os.close(write_end)


# The sandbox flow: a planned VM run as an unprivileged user under Kata's filter.


def _with_sandbox(config: KataConfig, value: str) -> KataConfig:
    assert config.qemu is not None
    return dataclasses.replace(config, qemu=dataclasses.replace(config.qemu, seccomp_sandbox=value))


@pytest.mark.qemu
@needs_root
def test_a_sandbox_runs_as_the_user_under_katas_filter(
    zoo: Zoo, nvidia_config: KataConfig, qemu_binary: str, tmp_path: Path
) -> None:
    runtime = tmp_path / "run"
    config = _with_sandbox(nvidia_config, KATA_RECOMMENDED)
    plan = planned(zoo, config, qemu_binary, runtime, [], pcie_root_port=2)
    assert plan.command.values("-sandbox")[-1] == parse_seccomp_sandbox(KATA_RECOMMENDED)
    assert plan.memlock == 0, "no VFIO device: nothing to pin"
    plan = dataclasses.replace(plan, command=emulated(plan).add("-S"))
    seen: dict[str, object] = {}

    def started(vm: VmStarted) -> None:
        status = _status(vm.pid)
        seen.update(uid=status["Uid"].split(), seccomp=status["Seccomp"].strip())
        seen["environ"] = Path(f"/proc/{vm.pid}/environ").read_bytes()
        with QmpSession(vm.qmp_socket) as session:
            session.execute("quit")

    run_sandbox(plan, on_started=started, user=NOBODY)
    assert seen["uid"] == ["65534"] * 4 and seen["seccomp"] == "2"
    assert seen["environ"] == f"PATH={MINIMAL_ENV['PATH']}\0".encode()
    assert not runtime.exists()


def test_legacy_groups_an_unprivileged_qemu_cannot_open_are_refused_up_front(
    zoo: Zoo, nvidia_config: KataConfig, tmp_path: Path
) -> None:
    server, names = zoo
    runtime = tmp_path / "run"
    legacy = [server.group_node(names["nic0"][0])]
    # Cold-plugged, but QEMU starts as the user (its filter forbids the later drop).
    config = _with_sandbox(nvidia_config, KATA_RECOMMENDED)
    cold = planned(zoo, config, "/usr/bin/qemu-system-x86_64", runtime, legacy)
    with pytest.raises(PlanError, match=r"cannot open the legacy VFIO device\(s\)") as info:
        run_sandbox(cold, user=NOBODY)
    assert "kata-vfio cdi generate --cdev" in (info.value.hint or "")
    # Deferred: plugged after QEMU dropped its privileges.
    hot = planned(
        zoo,
        nvidia_config,
        "/usr/bin/qemu-system-x86_64",
        runtime,
        legacy,
        cold_plug_vfio="no-port",
        hot_plug_vfio="root-port",
        pcie_root_port=2,
    )
    with pytest.raises(PlanError, match=r"legacy VFIO group\(s\) \d+ to hot-plug"):
        run_sandbox(hot, user=NOBODY)
    assert not runtime.exists(), "refused before anything was made"


def test_a_planned_vm_with_devices_asks_for_their_memlock(
    zoo: Zoo, nvidia_config: KataConfig, tmp_path: Path
) -> None:
    server, names = zoo
    plan = planned(zoo, nvidia_config, "/q", tmp_path, [server.group_node(names["gpu0"][0])])
    assert plan.memlock == (256 << 20) + (1 << 30)


def test_a_cdev_group_is_plugged_by_fd_names() -> None:
    group = HotplugGroup(
        group=30,
        slots=(
            (
                SlotFunction("gpu", Bdf("0000:18:00.0"), 0),
                SlotFunction("aud", Bdf("0000:18:00.1"), 1),
            ),
        ),
        iommufd="iommufd-g30",
    )
    fds = QemuFds(
        5,
        (PassedDevice("0000:18:00.0", 6, "x0"), PassedDevice("0000:18:00.1", 7, "x1")),
        "iommufd-g30",
    )
    request = group_request(group, fds=fds)
    assert request.fds == (("iommufd-g30-fd", 5), ("iommufd-g30-0", 6), ("iommufd-g30-1", 7))
    assert request.iommufd_fd == "iommufd-g30-fd"
    assert [dict(f.props) for f in request.slots[0]] == [
        {"fd": "iommufd-g30-0", "iommufd": "iommufd-g30"},
        {"fd": "iommufd-g30-1", "iommufd": "iommufd-g30"},
    ]
    plain = group_request(group)
    assert plain.fds == () and dict(plain.slots[0][0].props)["host"] == "0000:18:00.0"
    with pytest.raises(PlanError, match="fds opened for iommufd object"):
        group_request(group, fds=dataclasses.replace(fds, object_id="other"))


@pytest.mark.parametrize(("user", "problem"), [("root", "root"), ("no-such-kata-user", "exist")])
def test_qemu_run_refuses_a_user_that_is_no_drop(
    zoo: Zoo, nvidia_config: KataConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    user: str, problem: str,
) -> None:  # fmt: skip
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(oci_spec([])))
    config = tmp_path / "configuration.toml"
    config.write_text('[hypervisor.qemu]\npath = "/usr/bin/qemu-system-x86_64"\n')
    server, _ = zoo
    argv = [
        "--sysfs-root", server.sysfs_root, "qemu", "run", "--bundle", str(bundle),
        "--config", str(config), "--runtime-dir", str(tmp_path / "run"), "--user", user,
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_qemu_without_seccomp_gets_a_hint_naming_the_setting() -> None:
    from kata_vfio.qemu import launcher

    stderr = "qemu-system-x86_64: -sandbox on: There is no option group 'sandbox'"
    assert "CONFIG_SECCOMP_FILTER" in launcher.failure_hint(stderr, 1)
    assert "seccompsandbox" in launcher.failure_hint(stderr, 1)
    assert "QEMU's own message" in launcher.failure_hint("anything else", 1)


@pytest.mark.parametrize(
    ("exit_code", "words"),
    [
        (None, "raise --start-timeout"),  # still running, QMP silent: pinning memory
        (-9, "killed by signal 9"),
        (1, "exited with status 1 without a message"),
    ],
)
def test_a_silent_qemu_gets_a_hint_from_its_exit_status(exit_code: int | None, words: str) -> None:
    from kata_vfio.qemu import launcher

    hint = launcher.failure_hint("", exit_code)
    assert words in hint
    assert "message above" not in hint  # there is none to point at
