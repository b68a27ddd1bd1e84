"""The two lab kernels: Debian's own 6.12 image, and a small iommufd/cdev build of its source.

Both end up as a :class:`Kernel` in the cache, keyed by package version (and, for the built
one, the config fragment's hash), so later runs reuse them.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

from kvlab import apt, cache, kconfig, proc
from kvlab.errors import LabError

DEBIAN_IMAGE_PATTERN = r"linux-image-6\.12\.([0-9]+)\+deb12-amd64"
SOURCE_PACKAGE = "linux-source-6.12"
# Bump when the build recipe changes in a way the fragment hash does not show.
_RECIPE = "kvlab-kernel-1"


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A bootable lab kernel: the image, its release string, and its modules (if any)."""

    name: str
    image: Path
    release: str
    module_root: Path | None  # directory holding lib/modules/<release>, None: all built in

    @property
    def module_dir(self) -> Path | None:
        """``lib/modules/<release>`` of this kernel, or None when everything is built in."""
        if self.module_root is None:
            return None
        return self.module_root / "lib" / "modules" / self.release


def debian_kernel(root: Path | None = None) -> Kernel:
    """Debian's newest linux-image-6.12.*+deb12-amd64, unpacked and depmod'ed in the cache."""
    root = root or cache.cache_root()
    package = apt.newest_name(DEBIAN_IMAGE_PATTERN)
    version = apt.candidate_version(package)
    release = package.removeprefix("linux-image-")
    final = root / "kernels" / f"debian-{release}-{cache.digest([version, _RECIPE])}"
    with cache.locked(root / "locks" / f"{final.name}.lock"):
        if not (final / "ready").is_file():
            deb = apt.download(package, version, root / "debs")
            staging = cache.staging_dir(final)
            apt.unpack(deb, staging)
            # The .deb ships no modules.dep (its postinst makes it); modprobe needs one.
            proc.run(["depmod", "-b", str(staging), release], what=f"depmod for {release}")
            (staging / "ready").write_text(f"{package} {version}\n")
            cache.publish_dir(staging, final)
    return Kernel(
        name="debian",
        image=final / "boot" / f"vmlinuz-{release}",
        release=release,
        module_root=final,
    )


def lab_kernel(root: Path | None = None, *, jobs: int | None = None, nice: int = 19) -> Kernel:
    """The iommufd/cdev kernel: tinyconfig + the fragment, built from linux-source-6.12.

    About 7 minutes on 2 cores the first time; later calls return the cached image.
    """
    root = root or cache.cache_root()
    version = apt.candidate_version(SOURCE_PACKAGE)
    fragment_text = kconfig.fragment_path().read_text()
    wanted = kconfig.parse(fragment_text, source=str(kconfig.fragment_path()))
    key = cache.digest([version, fragment_text, _RECIPE])
    final = root / "kernels" / f"lab-{version.split('-')[0]}-{key}"
    with cache.locked(root / "locks" / f"{final.name}.lock"):
        if not (final / "ready").is_file():
            deb = apt.download(SOURCE_PACKAGE, version, root / "debs")
            _build(deb, wanted, final, jobs=jobs or os.cpu_count() or 1, nice=nice)
    release = (final / "release").read_text().strip()
    return Kernel(name="lab", image=final / "bzImage", release=release, module_root=None)


def _build(deb: Path, wanted: dict[str, str], final: Path, *, jobs: int, nice: int) -> None:
    for tool in ("make", "gcc", "bc", "flex", "bison", "tar", "xz"):
        proc.require_tool(tool)
    staging = cache.staging_dir(final)
    work = final.parent / f".build-{final.name}"
    shutil.rmtree(work, ignore_errors=True)
    log = staging / "build.log"
    started = time.monotonic()
    try:
        apt.unpack(deb, work)
        tarballs = sorted((work / "usr" / "src").glob("linux-source-*.tar.xz"))
        if len(tarballs) != 1:
            raise LabError(f"{deb.name} holds {len(tarballs)} source tarballs, expected one")
        proc.run(
            ["tar", "-xf", str(tarballs[0]), "-C", str(work), "--no-same-owner"],
            what=f"unpacking {tarballs[0].name}",
        )
        tree = work / tarballs[0].name.removesuffix(".tar.xz")
        make = ["make", "ARCH=x86_64"]
        proc.run([*make, "tinyconfig"], cwd=tree, what="make tinyconfig", log=log)
        # Kconfig takes the last assignment of a symbol: appending the fragment overrides.
        config = tree / ".config"
        config.write_text(config.read_text() + "\n" + kconfig.fragment_path().read_text())
        proc.run([*make, "olddefconfig"], cwd=tree, what="make olddefconfig", log=log)
        got = kconfig.parse(config.read_text(), source=str(config))
        if lost := kconfig.missing(wanted, got):
            raise LabError(
                "the lab kernel config lost options (unmet dependencies?):\n" + "\n".join(lost),
                hint=f"fix {kconfig.fragment_path()}",
            )
        proc.run([*make, f"-j{jobs}", "bzImage"], cwd=tree, what="make bzImage", log=log, nice=nice)
        release = proc.run([*make, "-s", "kernelrelease"], cwd=tree, what="make kernelrelease")
        shutil.copyfile(tree / "arch" / "x86" / "boot" / "bzImage", staging / "bzImage")
        shutil.copyfile(config, staging / "config")
        (staging / "release").write_text(release.strip() + "\n")
        (staging / "ready").write_text(f"built in {time.monotonic() - started:.0f} s\n")
        cache.publish_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
