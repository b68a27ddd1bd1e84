"""Writing a :class:`Spec` as YAML or JSON, deterministically and readable by every consumer.

Keys come in the reference's field order, maps sorted. YAML strings that any YAML 1.1 reader
(go-yaml v2 in the reference, PyYAML) could take for a number, boolean or null are quoted, so a
device named ``0``, ``1:2``, ``y`` or ``1e5`` reads back as that string everywhere. YAML output
starts with ``---`` as the reference's writer does.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml

from kata_vfio.cdi.model import Spec

__all__ = ["SpecFormat", "dump_document", "dump_spec", "format_for_path"]

SpecFormat = Literal["yaml", "json"]

_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
# Plain scalars that YAML 1.1 readers may resolve to something other than a string.
_NUMBER_FIRST = frozenset("0123456789+-.")
_KEYWORDS = frozenset(
    word
    for base in ("y", "yes", "n", "no", "true", "false", "on", "off", "null")
    for word in (base, base.capitalize(), base.upper())
) | frozenset(("~", "<<", "="))


class _SpecDumper(_Dumper):  # type: ignore[misc]
    """A safe dumper that quotes every string a YAML 1.1 reader might not read as a string."""


def _represent_str(dumper: Any, value: str) -> Any:
    style = None
    if not value or value[0] in _NUMBER_FIRST or value in _KEYWORDS:
        style = '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_SpecDumper.add_representer(str, _represent_str)


def format_for_path(path: str) -> SpecFormat:
    """``json`` for a ``.json`` file name, ``yaml`` otherwise (the reference's default)."""
    return "json" if path.endswith(".json") else "yaml"


def dump_document(document: Any, fmt: SpecFormat = "yaml") -> bytes:
    """Serialises a plain document (dicts, lists, strings, ints, bools)."""
    if fmt == "json":
        return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
    text: str = yaml.dump(
        document,
        Dumper=_SpecDumper,
        sort_keys=False,
        default_flow_style=False,
        explicit_start=True,
        allow_unicode=True,
        width=4096,
    )
    return text.encode()


def dump_spec(spec: Spec, fmt: SpecFormat = "yaml") -> bytes:
    """The spec as file content (no validation; writers validate first)."""
    return dump_document(spec.to_document(), fmt)
