"""The README's examples run as written: every fenced block of README.md is accounted for here.

Each block is one of: shell commands, run with bash (``-e``) against the bundled sample host or
a fake host, ``/tmp/...`` demo directories moved into a temporary directory; printed output,
compared with what the command the README names prints (a line ``...`` stands for any lines, a
``...`` inside a line for any text); Python, run with ``exec`` in a temporary directory; or
skipped by design, with the reason (root, real hardware, the lab, a Kubernetes cluster, hours
of benchmarking). A block the table below does not know fails the test, so a new example
cannot go unchecked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import kata_vfio
from kata_vfio.samples import sample_host
from kata_vfio.testing import build_host

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BIN = Path(sys.executable).parent  # the environment's kata-vfio and python3


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: its language tag, text and first line number in README.md."""

    lang: str
    text: str
    line: int

    @property
    def key(self) -> str:
        return self.text.splitlines()[0].strip()


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1)
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    ]


def block(key_prefix: str) -> Block:
    found = [b for b in readme_blocks() if b.key.startswith(key_prefix)]
    assert len(found) == 1, f"README.md has {len(found)} blocks starting {key_prefix!r}"
    return found[0]


# Blocks that cannot run here, each with why, and what checks the same thing instead.
SKIPPED_BY_DESIGN = {
    "pip install . && kata-vfio doctor": "installs into the caller's environment and reads this "
    "machine's host; tools/check installs the wheel into a fresh venv and runs the CLI",
    ".ci/run": "it is CI itself (installs system packages as root, then runs tools/check)",
    "python benches/run_scan_bench.py": "full benchmarks take minutes to hours; "
    "tests/tools/test_bench_runners.py runs every runner with --smoke",
    "$ kata-vfio unbind 0000:01:00.0": "needs another process holding a VFIO group open (the "
    "kernel's EBUSY); the lab checks this refusal (tests/lab/test_lab_refusals.py)",
    "from kata_vfio import binding, vfio": "binds real devices and opens /dev/vfio as root; "
    "the lab runs these calls on a real kernel (tests/lab)",
    "from kata_vfio import cdi, scan": "a fragment (spec, path, container_spec are the caller's) "
    "that starts a KVM guest with real VFIO devices; tests/kata and tests/qemu drive the same "
    "calls on fake hosts and TCG",
    "tools/lab/lab prepare": "root and about 20 minutes in QEMU; .ci/run runs the lab",
}


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` in bash -e, with this environment's kata-vfio and python3 first on PATH."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-e", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _line_matches(expected: str, actual: str) -> bool:
    if "..." not in expected:
        return expected == actual
    parts = [re.escape(part) for part in expected.split("...")]
    return re.fullmatch(".*".join(parts), actual) is not None


def shows(expected: str, actual: str) -> bool:
    """Whether ``actual`` shows the lines of ``expected`` as the README prints them: each run
    of lines between ``...`` lines contiguous, the runs in order."""
    segments: list[list[str]] = [[]]
    for line in expected.splitlines():
        if line.strip() == "...":
            segments.append([])
        else:
            segments[-1].append(line.rstrip())
    lines = [line.rstrip() for line in actual.splitlines()]
    at = 0
    for segment in (s for s in segments if s):
        for start in range(at, len(lines) - len(segment) + 1):
            window = lines[start : start + len(segment)]
            if all(_line_matches(e, a) for e, a in zip(segment, window, strict=True)):
                at = start + len(segment)
                break
        else:
            return False
    return True


def test_every_block_is_checked_or_skipped_with_a_reason() -> None:
    known = [*SKIPPED_BY_DESIGN, *CHECKS]
    for b in readme_blocks():
        matches = [k for k in known if b.key.startswith(k)]
        assert len(matches) == 1, f"README.md line {b.line}: block {b.key!r} is not checked here"
    for key in known:
        assert any(b.key.startswith(key) for b in readme_blocks()), f"stale entry {key!r}"


def test_shows_matches_only_what_is_printed() -> None:
    assert shows("a\n...\nc", "a\nb\nc")
    assert shows("conf: .../x.toml", "conf: /usr/lib/x.toml")
    assert not shows("a\nc", "a\nb\nc")
    assert not shows("c\na", "a\nb\nc")


# --- the sample host and its copies -----------------------------------------------------------


def sample_output(*argv: str, paths: kata_vfio.HostPaths | None = None) -> tuple[int, str]:
    """What ``kata-vfio ARGV`` prints: on the sample host, or on the tree at ``paths``."""
    roots = ["--sample"] if paths is None else [
        "--sysfs-root", paths.sysfs, "--dev-root", paths.devfs, "--proc-root", paths.procfs,
    ]  # fmt: skip
    done = subprocess.run(
        [str(BIN / "kata-vfio"), *roots, *argv], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    return done.returncode, done.stdout


def copy_of_sample(tmp_path: Path) -> kata_vfio.HostPaths:
    root = Path(sample_host().paths.sysfs).parent
    shutil.copytree(root, tmp_path / "host", symlinks=True)
    return kata_vfio.HostPaths.for_tree(str(tmp_path / "host" / "sys"))


def check_groups_not_viable(tmp_path: Path) -> None:
    code, out = sample_output("groups")
    assert code == 0
    assert shows(block("group 85: NOT VIABLE").text, out), out


def check_groups_unknown(tmp_path: Path) -> None:
    paths = copy_of_sample(tmp_path)
    os.unlink(Path(paths.sysfs) / "bus/pci/devices/0000:a9:00.1")  # the README's bus link
    code, out = sample_output("groups", paths=paths)
    assert code == 1  # a group that cannot be read is a finding
    assert shows(block("group 85: UNKNOWN").text, out), out


def check_platform_group(tmp_path: Path) -> None:
    code, out = sample_output("groups")
    assert code == 0
    assert shows(block("group 2: NOT VIABLE").text, out), out


def check_inventory(tmp_path: Path) -> None:
    text = block("$ kata-vfio --sample k8s inventory").text
    command, expected = text.splitlines()[0], "\n".join(text.splitlines()[1:])
    done = run(command.removeprefix("$ "), tmp_path)
    assert done.returncode == 0, done.stderr
    assert shows(expected, done.stdout), done.stdout


def check_bind_dry_run(tmp_path: Path) -> None:
    """On a fake host with the README's GPU (an L40S on nvidia with its audio function)."""
    fake = build_host(tmp_path / "gpu", {"iommu": "intel", "devices": [
        {"bdf": "0000:80:01.0", "id": "8086:347a", "class": "060400", "driver": "pcieport",
         "group": 40},
        {"bdf": "0000:81:00.0", "id": "10de:26b9", "class": "030000", "driver": "nvidia",
         "group": 41, "parent": "0000:80:01.0"},
        {"bdf": "0000:81:00.1", "id": "10de:22ba", "class": "040300",
         "driver": "snd_hda_intel", "group": 41, "parent": "0000:80:01.0"},
    ]})  # fmt: skip
    # A real host's /proc names its kernel release (the fake one does not: bind then says it
    # cannot look up vfio variant drivers, a line the README's real host does not print).
    (Path(fake.paths.procfs) / "sys/kernel").mkdir(parents=True)
    (Path(fake.paths.procfs) / "sys/kernel/osrelease").write_text("6.12.0-readme\n")
    text = block("$ kata-vfio bind --dry-run").text
    command, expected = text.splitlines()[0], "\n".join(text.splitlines()[1:])
    argv = command.removeprefix("$ kata-vfio ").split()
    code, out = sample_output(*argv, paths=fake.paths)
    assert code == 0
    assert shows(expected, out.replace(fake.paths.sysfs, "/sys")), out


# --- shell walkthroughs -------------------------------------------------------------------------


def demo_script(b: Block, tmp_path: Path) -> str:
    """The block's commands with the /tmp demo directories moved under ``tmp_path``."""
    return re.sub(r"/tmp/(cdi-demo|sandbox-demo)", lambda m: str(tmp_path / m.group(1)), b.text)


def assert_injected_and_stripped(config_file: Path) -> None:
    """The bundle asks for groups 14 and 22 by annotation: both injected, the ask removed."""
    config = json.loads(config_file.read_text())
    assert config["annotations"] == {"io.kubernetes.cri.container-type": "sandbox"}
    assert [d["path"] for d in config["linux"]["devices"]] == [
        "/dev/vfio/vfio",
        "/dev/vfio/14",
        "/dev/vfio/22",
    ]


def check_cdi_walkthrough(tmp_path: Path) -> None:
    done = run(demo_script(block("mkdir -p /tmp/cdi-demo/bundle"), tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    expected = block("injected nvidia.com/pgpu=14").text.replace("/tmp", str(tmp_path))
    assert shows(expected, done.stdout), done.stdout
    assert "nothing to do" in done.stdout.splitlines()[-2]  # the second inject: a no-op
    assert_injected_and_stripped(tmp_path / "cdi-demo/bundle/config.json")


def check_cdi_python(tmp_path: Path) -> None:
    """The same flow from Python, on the bundle as the walkthrough first writes it."""
    script = demo_script(block("mkdir -p /tmp/cdi-demo/bundle"), tmp_path)
    setup = "\n".join(line for line in script.splitlines() if " inject " not in line)
    done = run(setup, tmp_path)
    assert done.returncode == 0, done.stderr
    exec_snippet(demo_script(block("from kata_vfio import cdi, oci"), tmp_path), tmp_path)
    assert_injected_and_stripped(tmp_path / "cdi-demo/bundle/config.json")


def _wrapped_argv_shown(expected: str, actual_line: str) -> bool:
    """The README wraps the one-line QEMU command and elides repeats with ``...``."""
    words, actual = expected.split(), actual_line.split()
    at = 0
    for word in words:
        if word == "...":
            continue
        stem = word.removesuffix("...")
        for index in range(at, len(actual)):
            if actual[index] == word or (stem != word and actual[index].startswith(stem)):
                at = index + 1
                break
        else:
            return False
    return True


def check_sandbox_plan(tmp_path: Path) -> None:
    done = run(demo_script(block("S=$(python3 -c"), tmp_path), tmp_path)
    assert done.returncode == 0, done.stderr
    printed = block("configuration: .../kata_vfio").text
    head, argv = printed.split("QEMU command line:\n")
    assert shows(head + "QEMU command line:", done.stdout), done.stdout
    command = done.stdout.split("QEMU command line:\n")[1].splitlines()[0]
    assert _wrapped_argv_shown(argv, command), command


def check_sandbox_container(tmp_path: Path) -> None:
    first = demo_script(block("S=$(python3 -c"), tmp_path)
    second = demo_script(block("kata-vfio --sample sandbox plan --bundle $D/sandbox"), tmp_path)
    done = run(first + "\n" + second, tmp_path)
    assert done.returncode == 0, done.stderr
    expected = block("removed annotation cdi.k8s.io/vfio").text.replace("/tmp", str(tmp_path))
    assert shows(expected, done.stdout), done.stdout
    for bundle in ("sandbox", "container"):
        spec = json.loads((tmp_path / "sandbox-demo" / bundle / "config.json").read_text())
        assert "cdi.k8s.io/vfio" not in spec.get("annotations", {})


def check_manifests(tmp_path: Path) -> None:
    """The manifests are written (``kubectl apply`` needs a cluster: skipped by design); the
    pod spec below them asks for the RuntimeClass and the resource they define."""
    lines = block("kata-vfio k8s manifests --image").text.splitlines()
    assert lines[1].startswith("kubectl apply")  # the cluster step, not run here
    done = run(lines[0].split("#")[0], tmp_path)
    assert done.returncode == 0, done.stderr
    documents = [d for d in yaml.safe_load_all((tmp_path / "kata-vfio.yaml").read_text()) if d]
    kinds = {d["kind"]: d for d in documents}
    pod = yaml.safe_load(block("spec:").text)["spec"]
    assert pod["runtimeClassName"] == kinds["RuntimeClass"]["metadata"]["name"]
    (resource,) = pod["containers"][0]["resources"]["limits"]
    code, inventory = sample_output("k8s", "inventory", "--iommu-mode", "legacy")
    assert code == 0 and f"\n{resource}=" in inventory


def check_agent_synopsis(tmp_path: Path) -> None:
    """A synopsis, not a command: every option it names exists in the command's --help."""
    text = block("kata-vfio [--sysfs-root R] [--dev-root D] k8s device-plugin").text
    plugin, inventory = text.split("\nkata-vfio [--sample] k8s inventory")
    for argv, part in ((["k8s", "device-plugin"], plugin), (["k8s", "inventory"], inventory)):
        done = run(f"kata-vfio {' '.join(argv)} --help", tmp_path)
        assert done.returncode == 0, done.stderr
        for option in set(re.findall(r"--[a-z][a-z-]*", part)) - {
            "--sysfs-root",
            "--dev-root",
            "--sample",
        }:
            assert option in done.stdout, f"{option} is not an option of {' '.join(argv)}"


def check_dra_manifests(tmp_path: Path) -> None:
    """The DRA manifests are written; the ResourceClaimTemplate below them asks for their
    DeviceClass, and its CEL and constraint name attributes the plugin publishes."""
    from kata_vfio.k8s.dra.slices import device_entry
    from kata_vfio.k8s.inventory import build_inventory
    from kata_vfio.k8s.resources import default_resources

    lines = block("kata-vfio k8s manifests --dra").text.splitlines()
    assert lines[1].startswith("kubectl apply")  # the cluster step, not run here
    done = run(lines[0].split("#")[0], tmp_path)
    assert done.returncode == 0, done.stderr
    documents = list(yaml.safe_load_all((tmp_path / "kata-vfio-dra.yaml").read_text()))
    kinds = {d["kind"]: d for d in documents if d}
    assert {"DaemonSet", "ClusterRole", "DeviceClass", "RuntimeClass"} <= set(kinds)
    driver = kinds["DeviceClass"]["metadata"]["name"]
    template, pod = list(yaml.safe_load_all(block("apiVersion: resource.k8s.io/v1").text))
    (request,) = template["spec"]["spec"]["devices"]["requests"]
    assert request["exactly"]["deviceClassName"] == driver
    assert pod["spec"]["runtimeClassName"] == kinds["RuntimeClass"]["metadata"]["name"]
    host = kata_vfio.scan(sample_host().paths, details=True)
    unit = build_inventory(host, default_resources(), "legacy").units[0]
    published = set(device_entry(unit, driver)["attributes"])
    named = {f"{driver}/{n}" for n in re.findall(rf'"{re.escape(driver)}"\]\.(\w+)', str(request))}
    (constraint,) = template["spec"]["spec"]["devices"]["constraints"]
    assert named and named | {constraint["matchAttribute"]} <= published


def check_dra_synopsis(tmp_path: Path) -> None:
    """Every option the DRA plugin's synopsis names exists in its --help, and every option of
    its --help is in the synopsis."""
    text = block("kata-vfio [--sysfs-root R] [--dev-root D] [--proc-root P] k8s dra-plugin").text
    done = run("kata-vfio k8s dra-plugin --help", tmp_path)
    assert done.returncode == 0, done.stderr
    named = set(re.findall(r"--[a-z][a-z-]*", text)) - {"--sysfs-root", "--dev-root", "--proc-root"}
    offered = set(re.findall(r"--[a-z][a-z-]*", done.stdout)) - {"--help", "--json"}
    assert named == offered


# --- Python --------------------------------------------------------------------------------------


def exec_snippet(source: str, cwd: Path, **names: Any) -> tuple[str, dict[str, Any]]:
    """Runs ``source`` as a script in ``cwd`` with ``names`` defined: what it printed, and
    the names it left."""
    out = io.StringIO()
    namespace = {"__name__": "__readme__", **names}
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out):
        exec(compile(source, str(README), "exec"), namespace)
    return out.getvalue(), namespace


@contextlib.contextmanager
def this_machine_is_the_sample() -> Iterator[None]:
    """``kata_vfio.scan()`` of "this machine" reads the sample host instead (this machine may
    have no PCI devices the snippet names)."""
    real = kata_vfio.scan
    paths = sample_host().paths
    kata_vfio.scan = lambda *_, **kw: real(paths, **kw)  # type: ignore[assignment]
    try:
        yield
    finally:
        kata_vfio.scan = real


def check_python_api(tmp_path: Path) -> None:
    with this_machine_is_the_sample():
        out, names = exec_snippet(block("import kata_vfio").text, tmp_path)
    assert out.startswith("True ")  # the sample's IOMMU is on
    assert "14 ['0000:18:00.0'] /dev/vfio/14" in out.splitlines()  # an assignable group
    assert names["gpu"].driver == "vfio-pci"
    assert names["node"].group == 14


def check_fake_host_python(tmp_path: Path) -> None:
    source = block("from kata_vfio.testing import build_host").text
    _, names = exec_snippet(source, tmp_path, tmp_path=tmp_path)
    assert names["host"].device("0000:01:00.0").driver == "vfio-pci"  # scanned before unbind
    again = kata_vfio.scan(names["fake"].paths)
    assert again.device("0000:01:00.0").driver == "nvidia"  # the snippet's last step


CHECKS: dict[str, Callable[[Path], None]] = {
    "group 85: NOT VIABLE": check_groups_not_viable,
    "group 85: UNKNOWN": check_groups_unknown,
    "group 2: NOT VIABLE": check_platform_group,
    "import kata_vfio": check_python_api,
    "from kata_vfio.testing import build_host": check_fake_host_python,
    "$ kata-vfio bind --dry-run": check_bind_dry_run,
    "mkdir -p /tmp/cdi-demo/bundle": check_cdi_walkthrough,
    "injected nvidia.com/pgpu=14": check_cdi_walkthrough,
    "from kata_vfio import cdi, oci": check_cdi_python,
    "S=$(python3 -c": check_sandbox_plan,
    "configuration: .../kata_vfio": check_sandbox_plan,
    "kata-vfio --sample sandbox plan --bundle $D/sandbox": check_sandbox_container,
    "removed annotation cdi.k8s.io/vfio": check_sandbox_container,
    "kata-vfio k8s manifests --image": check_manifests,
    "kata-vfio k8s manifests --dra": check_dra_manifests,
    "apiVersion: resource.k8s.io/v1": check_dra_manifests,
    "spec:": check_manifests,
    "kata-vfio [--sysfs-root R] [--dev-root D] k8s device-plugin": check_agent_synopsis,
    "kata-vfio [--sysfs-root R] [--dev-root D] [--proc-root P] k8s dra-plugin": check_dra_synopsis,
    "$ kata-vfio --sample k8s inventory": check_inventory,
}


@pytest.mark.parametrize(
    "check", sorted(set(CHECKS.values()), key=lambda f: f.__name__), ids=lambda f: f.__name__
)
def test_readme_example(check: Callable[[Path], None], tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    check(tmp_path)


# --- commands named in the prose ----------------------------------------------------------------

GLOBAL_OPTIONS = {"--sample", "--sysfs-root", "--dev-root", "--proc-root"}
# Inline commands concrete enough to run here, and the exit codes the README allows them:
# memlock reads this process's own limit (0: it covers the VM, 1: it does not).
RUNNABLE_INLINE = {
    "kata-vfio --sample groups": {0},
    "kata-vfio memlock 64G --devices 2 --viommu": {0, 1},
}


def inline_commands() -> list[str]:
    """Every `kata-vfio ...` code span outside the fenced blocks, on one line."""
    text = re.sub(r"^```.*?^```", "", README.read_text(), flags=re.DOTALL | re.MULTILINE)
    return sorted({" ".join(m.split()) for m in re.findall(r"`(kata-vfio[^`]*)`", text)})


def command_paths(command: str) -> tuple[list[list[str]], set[str]]:
    """The subcommand paths a synopsis names (``a|b`` is two) and the options it uses."""
    words = command.split()[1:]
    path_words: list[list[str]] = [[]]
    for word in words:
        if word.startswith(("-", "[", "<")) or not re.fullmatch(r"[a-z][a-z0-9|-]*", word):
            break
        path_words = [[*p, alt] for p in path_words for alt in word.split("|")]
    options = set(re.findall(r"--[a-z][a-z-]*", command)) - GLOBAL_OPTIONS
    return path_words, options


def test_every_inline_command_exists_with_its_options(tmp_path: Path) -> None:
    commands = inline_commands()
    assert "kata-vfio check BDF..." in commands  # the prose is read
    for command in commands:
        paths, options = command_paths(command)
        for path in paths:
            done = run(f"kata-vfio {' '.join(path)} --help", tmp_path)
            assert done.returncode == 0, f"README names {command!r}: {done.stderr}"
            for option in options:
                assert option in done.stdout, f"README: {command!r}: no {option} in its --help"


def test_the_concrete_inline_commands_run(tmp_path: Path) -> None:
    commands = inline_commands()
    for command, codes in RUNNABLE_INLINE.items():
        assert command in commands, f"README no longer names {command!r}"
        done = run(command, tmp_path)
        assert done.returncode in codes, f"{command}: exit {done.returncode}\n{done.stderr}"
        assert done.stdout.strip()
