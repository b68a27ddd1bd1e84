"""Kernel modules for the initramfs: resolve load order from modules.dep, decompress.

busybox insmod loads one uncompressed file and knows nothing of dependencies, so the lab
resolves them itself, the way modprobe would, from the files depmod wrote.
"""

from __future__ import annotations

import dataclasses
import gzip
import lzma
import subprocess
from pathlib import Path

from kvlab import proc
from kvlab.errors import LabError

_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


def module_name(path: str) -> str:
    """The canonical module name of a path: ``kernel/net/9p/9pnet-virtio.ko.xz`` -> 9pnet_virtio."""
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    # modprobe treats '-' and '_' in module names as the same character.
    return base.replace("-", "_")


@dataclasses.dataclass(frozen=True)
class ModuleIndex:
    """What depmod knows about one kernel release."""

    directory: Path
    files: dict[str, str]  # name -> path relative to directory
    depends: dict[str, tuple[str, ...]]  # name -> names of its direct and indirect dependencies
    builtin: frozenset[str]

    @classmethod
    def load(cls, directory: Path) -> ModuleIndex:
        """Read ``modules.dep`` and ``modules.builtin`` under ``directory``."""
        dep_file = directory / "modules.dep"
        try:
            dep_text = dep_file.read_text()
        except FileNotFoundError:
            raise LabError(
                f"{dep_file} is missing", hint=f"run depmod -b <root> for {directory.name}"
            ) from None
        files: dict[str, str] = {}
        depends: dict[str, tuple[str, ...]] = {}
        for number, line in enumerate(dep_text.splitlines(), start=1):
            if not line.strip():
                continue
            target, sep, rest = line.partition(":")
            if not sep:
                raise LabError(f"{dep_file}:{number}: no ':' in {line!r}")
            name = module_name(target)
            files[name] = target
            depends[name] = tuple(module_name(dep) for dep in rest.split())
        builtin_file = directory / "modules.builtin"
        builtin = (
            frozenset(module_name(p) for p in builtin_file.read_text().split())
            if builtin_file.is_file()
            else frozenset()
        )
        return cls(directory, files, depends, builtin)

    def load_order(self, wanted: list[str]) -> list[str]:
        """Module names to insmod, dependencies first; built-in ones are left out."""
        order: list[str] = []

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in order or name in self.builtin:
                return
            if name in chain:
                raise LabError(f"module dependency cycle: {' -> '.join((*chain, name))}")
            if name not in self.files:
                raise LabError(
                    f"module {name} is neither built into nor shipped with {self.directory.name}"
                )
            for dep in self.depends[name]:
                visit(dep, (*chain, name))
            order.append(name)

        for name in wanted:
            visit(name.replace("-", "_"), ())
        return order

    def read(self, name: str) -> bytes:
        """The uncompressed .ko of module ``name``."""
        path = self.directory / self.files[name]
        raw = path.read_bytes()
        if path.name.endswith(".xz"):
            return lzma.decompress(raw)
        if path.name.endswith(".gz"):
            return gzip.decompress(raw)
        if path.name.endswith(".zst"):
            done = subprocess.run(
                [proc.require_tool("zstd"), "-dc", str(path)], capture_output=True, check=False
            )
            if done.returncode != 0:
                raise LabError(f"zstd could not unpack {path}: {done.stderr.decode().strip()}")
            return done.stdout
        return raw
