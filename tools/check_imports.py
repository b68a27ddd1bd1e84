#!/usr/bin/env python3
"""Fails on an import that breaks the layering of kata_vfio (see ARCHITECTURE.md).

Rules, checked on every import statement (function-local ones too) of the files given:

1. Layers: each room of ``python/kata_vfio`` (``vm``, ``qemu``, ``kata``, ``cli``...) imports
   only the rooms listed for it in ``ALLOWED``; ``qemu`` never imports ``kata``, ``vm`` neither
   ``kata`` nor ``qemu``, nothing but ``samples`` and the tests imports ``testing``.
2. Private names: a module or name starting with ``_`` is imported only from inside the
   package that holds it (``kata_vfio.cli._common`` by ``kata_vfio.cli.*``).
3. Public API: a name imported across rooms is in its module's ``__all__``.
4. The CLI's command modules do not import each other (shared code lives in ``cli/_*.py``).
5. Leaves: ``cdi.model`` imports no rule of its own package (no validation, no versions).
6. Shipped code (``python/``) and ``tools/`` import nothing from the test tree, and no
   test-only package (pytest, hypothesis).
7. The DRA plugin (``k8s.dra``) takes from the rest of ``k8s`` only the node's shared
   modules (``DRA_USES``), never the device plugin's; nothing else in ``k8s`` imports it; and
   only ``API_SERVER_MODULES`` import the ``kubernetes`` client (the rest of the plugin
   reaches the API server through the Protocols of ``k8s.dra.ports``).

Usage: ``check_imports.py [REPO]`` (default: the checkout this file is in). Prints one line per
violation, ``path:line: message``; exit 0 when there is none, 1 when there are, 2 on bad usage.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "kata_vfio"
# What every library room may import: the extension, the errors, the units of sizes, the
# package's own __init__ ("api": kata_vfio.scan, kata_vfio.HostPaths...) and its private
# helpers ("_util": the modules kata_vfio._atomic, kata_vfio._json... at the package root).
BASE = frozenset({"_core", "errors", "units", "api", "_util"})

# Room -> the other rooms it may import; "main" is the package's __main__.
ALLOWED: dict[str, frozenset[str]] = {
    "_core": frozenset(),
    "errors": frozenset(),
    "api": frozenset({"_core", "errors"}),
    "_util": frozenset({"_core", "errors"}),
    "units": frozenset({"errors", "_util"}),
    "host": BASE,
    "binding": BASE | {"host"},
    "vfio": BASE | {"host"},
    "oci": BASE,
    "cdi": BASE | {"oci", "host"},
    "vm": BASE,
    "qemu": BASE | {"vm", "vfio", "host"},
    "kata": BASE | {"vm", "qemu", "cdi", "oci", "host", "binding", "vfio"},
    "k8s": BASE | {"kata", "vm", "qemu", "cdi", "oci", "host", "binding", "vfio"},
    "testing": BASE,
    "samples": BASE | {"testing"},
    # The CLI sees only the public API (no _core, no test fakes), plus the package-root
    # helpers every room shares for outside input (_echo, _numbers).
    "cli": frozenset(
        {"api", "errors", "units", "_util", "host", "binding", "vfio", "oci", "cdi", "vm"}
        | {"qemu", "kata"}
    )
    | {"k8s", "samples"},
    "main": frozenset({"cli"}),
}
# Modules that must stay leaves: within the package they import only these.
LEAVES: dict[str, frozenset[str]] = {
    "kata_vfio.cdi.model": frozenset(
        {"kata_vfio.cdi.names", "kata_vfio.cdi.goquote", "kata_vfio.errors"}
    ),
}
TEST_ONLY = frozenset({"pytest", "hypothesis", "_pytest"})
# Rule 7: the DRA kubelet plugin inside k8s.
K8S = f"{PACKAGE}.k8s"
DRA = f"{K8S}.dra"
DRA_USES = frozenset(
    f"{K8S}.{name}"
    for name in ("inventory", "resources", "cdispec", "grpcapi", "unixgrpc", "watch")
)
API_SERVER_MODULES = frozenset(f"{DRA}.{name}" for name in ("apiclient", "claims", "slices"))
API_CLIENT = "kubernetes"


@dataclass(frozen=True)
class Violation:
    """One import that breaks a rule."""

    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Import:
    """One imported module (and, for ``from M import n``, the name)."""

    line: int
    module: str
    name: str | None


class Repo:
    """The checkout: where the package and the tests are, and what each module exports."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "python"
        self.tests = root / "tests"
        self._exports: dict[str, frozenset[str] | None] = {}

    def module_name(self, path: Path) -> str | None:
        """The dotted name of a file under ``python/``, None elsewhere."""
        try:
            parts = list(path.relative_to(self.python).with_suffix("").parts)
        except ValueError:
            return None
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)

    def is_module(self, dotted: str) -> bool:
        base = self.python.joinpath(*dotted.split("."))
        return (
            base.with_suffix(".py").is_file()
            or base.with_suffix(".pyi").is_file()
            or (base / "__init__.py").is_file()
        )

    def exports(self, dotted: str) -> frozenset[str] | None:
        """A module's static ``__all__`` (None when it has none)."""
        if dotted not in self._exports:
            self._exports[dotted] = self._read_all(dotted)
        return self._exports[dotted]

    def _read_all(self, dotted: str) -> frozenset[str] | None:
        base = self.python.joinpath(*dotted.split("."))
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                tree = ast.parse(candidate.read_text(), str(candidate))
                for node in tree.body:
                    if (
                        isinstance(node, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                        and isinstance(node.value, (ast.List, ast.Tuple))
                    ):
                        return frozenset(
                            e.value
                            for e in node.value.elts
                            if isinstance(e, ast.Constant) and isinstance(e.value, str)
                        )
                return None
        return None

    def test_modules(self) -> frozenset[str]:
        """Top-level names the test tree makes importable (``oracles``, ``sandbox_hosts``...):
        its folders' modules and packages, as pytest puts each test folder on the path."""
        names: set[str] = {"tests", "conftest"}
        for folder in [self.tests, *(p for p in self.tests.rglob("*") if p.is_dir())]:
            for entry in folder.iterdir():
                if entry.suffix == ".py":
                    names.add(entry.stem)
                elif (entry / "__init__.py").is_file():
                    names.add(entry.name)
        return frozenset(names)


def room(dotted: str) -> str | None:
    """The room of a module of the package (``kata_vfio.kata.sandbox`` -> ``kata``)."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1:
        return "api"
    if parts[1] == "__main__":
        return "main"
    if parts[1].startswith("_") and parts[1] != "_core":
        return "_util"
    return parts[1]


def imports(tree: ast.AST, importer: str | None) -> Iterator[Import]:
    """Every import in ``tree`` (relative ones resolved against ``importer``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(node.lineno, alias.name, None)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level and importer is not None:
                base = importer.split(".")[: -node.level]
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                yield Import(node.lineno, module, alias.name)


def _private_owner(dotted: str) -> str | None:
    """The package that owns the first private component of ``dotted`` (None: public)."""
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:index])
    return None


def _inside(importer: str, package: str) -> bool:
    return importer == package or importer.startswith(package + ".")


def check_package_import(repo: Repo, importer: str, item: Import) -> Iterator[str]:
    """Rules 1-5 for one import of a package module."""
    target = item.module
    name = item.name
    if name is not None and name != "*" and repo.is_module(f"{target}.{name}"):
        target, name = f"{target}.{name}", None  # `from pkg import submodule`
    source_room, target_room = room(importer), room(target)
    if target_room is None:
        return
    if target_room != source_room and target_room not in ALLOWED.get(source_room or "", ()):
        yield f"{importer} ({source_room}) imports {target} ({target_room}): layer not allowed"
    full = target if name is None else f"{target}.{name}"
    owner = _private_owner(full)
    if owner is not None and not _inside(importer, owner):
        yield f"{importer} imports the private {full} from outside {owner}"
    if (
        name is not None
        and not name.startswith("_")
        and (source_room != target_room or source_room == "cli")
        and target != importer
    ):
        exported = repo.exports(target)
        if exported is not None and name not in exported:
            yield f"{importer} imports {name} from {target}, which is not in its __all__"
    if (
        source_room == "cli"
        and target_room == "cli"
        and target not in (f"{PACKAGE}.cli", importer)
        and _private_owner(target) is None
    ):
        yield f"{importer} imports another CLI command module, {target}"
    leaf = LEAVES.get(importer)
    if leaf is not None and target not in leaf:
        yield f"{importer} must stay a leaf but imports {target}"
    yield from _check_dra(importer, target)


def _check_dra(importer: str, target: str) -> Iterator[str]:
    """Rule 7's first two parts (the third, the API client, is in :func:`check_file`)."""
    if _inside(importer, DRA):
        if _inside(target, K8S) and not _inside(target, DRA) and target not in DRA_USES:
            uses = ", ".join(sorted(name.rsplit(".", 1)[1] for name in DRA_USES))
            yield f"{importer} imports {target}: k8s.dra takes only {uses} from k8s"
    elif _inside(importer, K8S) and _inside(target, DRA):
        yield f"{importer} imports {target}: the rest of k8s never imports the DRA plugin"


def check_file(repo: Repo, path: Path, test_modules: frozenset[str]) -> list[Violation]:
    """Every violation in one file."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError) as exc:
        return [Violation(path, 0, f"cannot read: {exc}")]
    importer = repo.module_name(path)
    found: list[Violation] = []
    if importer is not None and room(importer) not in ALLOWED:
        return [
            Violation(
                path,
                1,
                f"{importer} is in a room the layering does not know ({room(importer)}): add "
                "it to ALLOWED in tools/check_imports.py and to ARCHITECTURE.md",
            )
        ]
    for item in imports(tree, importer):
        top = item.module.split(".")[0]
        if top in test_modules:
            found.append(Violation(path, item.line, f"imports {item.module} from the test tree"))
        elif importer is not None and top in TEST_ONLY:
            found.append(Violation(path, item.line, f"imports the test-only {item.module}"))
        elif importer is not None and top == API_CLIENT and importer not in API_SERVER_MODULES:
            found.append(
                Violation(
                    path,
                    item.line,
                    f"{importer} imports the {API_CLIENT} client: only "
                    + ", ".join(sorted(API_SERVER_MODULES))
                    + " talk to the API server",
                )
            )
        elif importer is not None and top == PACKAGE:
            found.extend(
                Violation(path, item.line, message)
                for message in check_package_import(repo, importer, item)
            )
    return found


def check(root: Path) -> list[Violation]:
    """Every violation in the checkout at ``root`` (the package and tools/)."""
    repo = Repo(root)
    test_modules = repo.test_modules()
    files = sorted((root / "python" / PACKAGE).rglob("*.py"))
    files += sorted(p for p in (root / "tools").rglob("*.py") if p.is_file())
    found = [v for path in files for v in check_file(repo, path, test_modules)]
    # One line per statement and rule, also when it imports several names.
    return list(dict.fromkeys(found))


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: check_imports.py [REPO]", file=sys.stderr)
        return 2
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    if not (root / "python" / PACKAGE).is_dir():
        print(f"check_imports.py: {root} has no python/{PACKAGE}", file=sys.stderr)
        return 2
    violations = check(root)
    try:
        for violation in violations:
            print(str(violation).replace(str(root) + "/", ""))
    except BrokenPipeError:
        pass
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
