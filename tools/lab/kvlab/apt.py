"""Debian packages through apt's own clients: find a version, download a .deb, unpack it."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from kvlab import proc
from kvlab.errors import LabError, LabUnavailableError

_SOURCES_HINT = (
    "the package comes from Debian bookworm-security: make sure "
    "'deb http://deb.debian.org/debian-security bookworm-security main' is in the apt sources, "
    "then run apt-get update"
)


def candidate_version(package: str) -> str:
    """The version apt would install for ``package``."""
    try:
        out = proc.run(
            ["apt-cache", "show", "--no-all-versions", package], what=f"apt-cache show {package}"
        )
    except LabError as exc:
        # apt-cache exits 100 with "No packages found" for a package its lists do not have.
        raise LabUnavailableError(f"apt knows no package {package}", hint=_SOURCES_HINT) from exc
    match = re.search(r"^Version: (\S+)$", out, re.MULTILINE)
    if match is None:
        raise LabUnavailableError(f"apt knows no package {package}", hint=_SOURCES_HINT)
    return match.group(1)


def newest_name(pattern: str) -> str:
    """The known package name matching ``pattern`` (one group: a number) with the highest number.

    Used for names that carry the kernel ABI, e.g. linux-image-6.12.117+deb12-amd64.
    """
    prefix = pattern.split("(", 1)[0].replace("\\", "")
    out = proc.run(["apt-cache", "pkgnames", prefix], what=f"apt-cache pkgnames {prefix}")
    regex = re.compile(pattern)
    best: tuple[int, str] | None = None
    for name in out.split():
        match = regex.fullmatch(name)
        if match is not None and (best is None or int(match.group(1)) > best[0]):
            best = (int(match.group(1)), name)
    if best is None:
        raise LabUnavailableError(f"apt knows no package matching {pattern}", hint=_SOURCES_HINT)
    return best[1]


def download(package: str, version: str, debs: Path) -> Path:
    """``debs/<package>_<version>.deb``, downloaded with apt-get download unless already there."""
    safe_version = version.replace(":", "%3a")
    target = debs / f"{package}_{safe_version}.deb"
    if target.is_file():
        return target
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download.") as tmp:
        try:
            proc.run(
                ["apt-get", "download", f"{package}={version}"],
                cwd=Path(tmp),
                what=f"apt-get download {package}={version}",
            )
        except LabError as exc:
            raise LabUnavailableError(
                exc.message, hint="the lab needs network access to the Debian archive"
            ) from exc
        got = sorted(Path(tmp).glob("*.deb"))
        if len(got) != 1:
            raise LabError(f"apt-get download {package} gave {len(got)} files, expected one")
        shutil.move(str(got[0]), target)
    return target


def unpack(deb: Path, into: Path) -> None:
    """Extract the files of ``deb`` under ``into`` (dpkg -x: no scripts run, no root needed)."""
    into.mkdir(parents=True, exist_ok=True)
    proc.run(["dpkg", "-x", str(deb), str(into)], what=f"dpkg -x {deb.name}")
