"""A strict YAML loader that reads plain scalars the way the reference's decoder does.

The reference decodes spec files with ``sigs.k8s.io/yaml`` (go-yaml v2 underneath, YAML 1.1
without sexagesimal numbers or timestamps) and then Go's JSON decoder. PyYAML's own resolver
differs in ways that change device names: ``1:2`` would be the integer 62 (base 60) and ``y``
a string, where go-yaml reads the string ``"1:2"`` and the boolean ``true``. This loader uses
go-yaml v2's rules for unquoted scalars, rejects duplicate keys, and runs on libyaml's parser
when PyYAML has it (much faster than the pure-Python one).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Container
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kata_vfio._echo import echo

__all__ = ["HAS_LIBYAML", "format_go_float32", "go_scalar_string", "load_yaml"]

HAS_LIBYAML: bool = hasattr(yaml, "CSafeLoader")

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"
_MAP = "tag:yaml.org,2002:map"
_VALUE = "tag:yaml.org,2002:value"
_SEQ = "tag:yaml.org,2002:seq"

_BOOLS = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE"), True),
    **dict.fromkeys(("on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE"), False),
    **dict.fromkeys(("off", "Off", "OFF"), False),
}
_SPECIAL_FLOATS = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
# Which plain scalars may be something other than a string, by their first character.
_MAYBE_NUMBER = frozenset("+-0123456789")
_MAYBE_KEYWORD = frozenset("yYnNtTfFoO~")
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")
_INT64 = (-(1 << 63), (1 << 63) - 1)
_UINT64_MAX = (1 << 64) - 1
_DIGITS = {
    16: frozenset("0123456789abcdefABCDEF"),
    10: frozenset("0123456789"),
    8: frozenset("01234567"),
    2: frozenset("01"),
}
# Significant digits of the largest uint64 in each base: a longer run cannot be a 64-bit
# number, and is not given to int() (which refuses 4,301+ digits with a ValueError).
_MAX_DIGITS = {16: 16, 10: 20, 8: 22, 2: 64}


def go_parse_int(text: str) -> int | None:
    """Go's ``ParseInt(text, 0, 64)`` then ``ParseUint(text, 0, 64)``: None when neither."""
    sign = 1
    body = text
    signed = body[:1] in ("+", "-")
    if signed:
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    base = 10
    lower = body[:2].lower()
    if lower in ("0x", "0o", "0b"):
        base = {"0x": 16, "0o": 8, "0b": 2}[lower]
        body = body[2:]
    elif len(body) > 1 and body[0] == "0":
        base = 8
        body = body[1:]
    if not body or any(char not in _DIGITS[base] for char in body):
        return None
    significant = body.lstrip("0")  # Go allows any number of leading zeros
    if len(significant) > _MAX_DIGITS[base]:
        return None
    value = sign * int(significant or "0", base)
    if _INT64[0] <= value <= _INT64[1]:
        return value
    if not signed and value <= _UINT64_MAX:
        return value
    return None


def _resolve_plain(value: str) -> str:
    """The tag go-yaml v2 gives an unquoted scalar."""
    if value in _NULLS:
        return _NULL
    first = value[0]
    if first in _MAYBE_KEYWORD:
        return _BOOL if value in _BOOLS else _STR
    if first == ".":
        if value in _SPECIAL_FLOATS or _DOT_FLOAT.fullmatch(value):
            return _FLOAT
        return _STR
    if first in _MAYBE_NUMBER:
        if value in _SPECIAL_FLOATS:
            return _FLOAT
        plain = value.replace("_", "")
        if go_parse_int(plain) is not None:
            return _INT
        if _YAML_STYLE_FLOAT.fullmatch(plain) and not math.isinf(float(plain)):
            return _FLOAT
        return _STR
    if value == "<<":
        return _MERGE
    return _STR


class _GoYamlRules:
    """go-yaml v2 scalar resolution and duplicate-key rejection, mixed into a SafeLoader."""

    # Provided by the SafeLoader this is mixed into.
    construct_scalar: Any
    construct_object: Any

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)  # type: ignore[call-arg]
        # Mappings with merge keys, expanded (by node id), and those being expanded.
        self._go_merged: dict[int, tuple[MappingNode, list[tuple[Any, Node, Node]]]] = {}
        self._go_merging: set[int] = set()

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode and implicit[0]:
            return _resolve_plain(value)
        tag: str = super().resolve(kind, value, implicit)  # type: ignore[misc]
        return tag

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        value = go_parse_int(text)
        if value is None:
            raise ConstructorError(
                None, None, f"cannot decode {echo(text)} as an integer", node.start_mark
            )
        return value

    def construct_yaml_float(self, node: ScalarNode) -> float:
        text = str(self.construct_scalar(node))
        if text in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[text]
        try:
            return float(text.replace("_", ""))
        except ValueError:
            raise ConstructorError(
                None, None, f"cannot decode {echo(text)} as a float", node.start_mark
            ) from None

    def construct_yaml_bool(self, node: ScalarNode) -> bool:
        text = str(self.construct_scalar(node))
        if text not in _BOOLS:
            raise ConstructorError(
                None, None, f"cannot decode {echo(text)} as a boolean", node.start_mark
            )
        return _BOOLS[text]

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        # Merge keys are expanded here, not by PyYAML's flatten_mapping: its rules are not ours
        # and changed between releases (6.0.4 silently drops a merged pair whose key string is
        # the same object as one already merged, so "<<: [*a, *b]" with a shared key "x"
        # loaded instead of failing). go-yaml's strict decoder refuses a key set twice, merged
        # or not: a merge may add keys but neither override nor repeat them.
        if not isinstance(node, MappingNode):
            raise ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark
            )
        mapping: dict[Any, Any] = {}
        for key, _, value_node in self._go_pairs(node):
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def _go_pairs(self, node: MappingNode) -> list[tuple[Any, Node, Node]]:
        """The mapping's (key, key node, value node) in the order go-yaml v2 sets them, merges
        expanded; ConstructorError for a key set twice, a merge of a non-mapping, or a mapping
        that merges itself.

        go-yaml decodes ``<<: *m`` as m's pairs set into the same map where the merge key
        stands, and ``<<: [*a, *b]`` from the last element to the first. A mapping with merges
        is expanded once per load (its pairs are distinct keys, so at most the document's key
        count): a chain of merges of merges is linear, not exponential.
        """
        cached = self._go_merged.get(id(node))
        if cached is not None:
            return cached[1]
        if id(node) in self._go_merging:
            raise ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found a mapping that merges itself",
                node.start_mark,
            )
        self._go_merging.add(id(node))
        try:
            pairs: list[tuple[Any, Node, Node]] = []
            seen: set[Any] = set()
            has_merge = False
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    has_merge = True
                    for source in self._merge_sources(node, value_node):
                        for pair in self._go_pairs(source):
                            self._add_pair(node, pairs, seen, pair)
                    continue
                if key_node.tag == _VALUE:
                    # A "!!value" key is its text (go-yaml reads a scalar of an unknown tag so).
                    key_node.tag = _STR
                key = self.construct_object(key_node)
                self._add_pair(node, pairs, seen, (key, key_node, value_node))
        finally:
            self._go_merging.discard(id(node))
        if has_merge:
            # The node itself is kept so that its id is not reused while cached.
            self._go_merged[id(node)] = (node, pairs)
        return pairs

    @staticmethod
    def _merge_sources(node: MappingNode, value_node: Node) -> list[MappingNode]:
        if isinstance(value_node, MappingNode):
            return [value_node]
        if isinstance(value_node, SequenceNode):
            for item in value_node.value:
                if not isinstance(item, MappingNode):
                    raise ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"expected a mapping for merging, but found {item.id}",
                        item.start_mark,
                    )
            return list(reversed(value_node.value))
        raise ConstructorError(
            "while constructing a mapping",
            node.start_mark,
            "expected a mapping or list of mappings for merging, but found "
            + str(getattr(value_node, "id", "a node")),
            value_node.start_mark,
        )

    @staticmethod
    def _add_pair(
        node: MappingNode,
        pairs: list[tuple[Any, Node, Node]],
        seen: set[Any],
        pair: tuple[Any, Node, Node],
    ) -> None:
        key, key_node, _ = pair
        _refuse_repeated_key(node, key_node, key, seen)
        seen.add(key)
        pairs.append(pair)


class _GoYamlLoader(_GoYamlRules, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The rules on libyaml's parser (PyYAML's C extension) when present."""


class _PureGoYamlLoader(_GoYamlRules, yaml.SafeLoader):
    """The same rules on PyYAML's pure-Python parser (for comparison and as a fallback)."""


def _refuse_repeated_key(node: MappingNode, key_node: Node, key: Any, seen: Container[Any]) -> None:
    """go-yaml's strict decoder: a key may appear once in a mapping, and must be hashable."""
    try:
        duplicate = key in seen
    except TypeError:
        raise ConstructorError(
            "while constructing a mapping", node.start_mark, "found unhashable key",
            key_node.start_mark,
        ) from None  # fmt: skip
    if duplicate:
        raise ConstructorError(
            "while constructing a mapping", node.start_mark, f"found duplicate key {echo(key)}",
            key_node.start_mark,
        )  # fmt: skip


def _binary_string(loader: Any, node: ScalarNode) -> str:
    # Go's base64.StdEncoding: padding required, only CR and LF skipped.
    text = str(loader.construct_scalar(node)).replace("\r", "").replace("\n", "")
    try:
        data = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise ConstructorError(
            None, None, "!!binary value contains invalid base64 data", node.start_mark
        ) from None
    return data.decode("utf-8", errors="replace")


_CONSTRUCTORS: dict[str, Any] = {
    _INT: _GoYamlRules.construct_yaml_int,
    _FLOAT: _GoYamlRules.construct_yaml_float,
    _BOOL: _GoYamlRules.construct_yaml_bool,
    # "<<" is a merge only as a key (expanded by construct_mapping); as a value it is a string.
    _MERGE: lambda loader, node: "<<",
    # go-yaml gives an explicit !!timestamp as its text and !!binary as the decoded bytes in a
    # string (made valid UTF-8 on the way to JSON).
    "tag:yaml.org,2002:timestamp": lambda loader, node: str(loader.construct_scalar(node)),
    "tag:yaml.org,2002:binary": _binary_string,
}


for _loader in (_GoYamlLoader, _PureGoYamlLoader):
    for _tag, _constructor in _CONSTRUCTORS.items():
        _loader.add_constructor(_tag, _constructor)


def load_yaml(data: bytes | str, *, pure_python: bool = False) -> Any:
    """Parses the first YAML document (None for an empty stream).

    Like go-yaml v2's ``Unmarshal`` in the reference, anything after the first document is
    not read: a trailing ``---`` or a second document is ignored (only the token that ends the
    first document is scanned). Uses libyaml's parser when PyYAML has it, unless
    ``pure_python``. Raises :class:`yaml.YAMLError` (with line and column) for bad syntax or
    duplicate keys.
    """
    loader = (_PureGoYamlLoader if pure_python else _GoYamlLoader)(data)
    try:
        # check_node() drops the stream start; get_node() composes one document only.
        node = loader.get_node() if loader.check_node() else None
        if node is None:
            return None
        try:
            return _NodeBuilder().build(node)
        except _NeedsFullConstructor:
            return loader.construct_document(node)
    finally:
        loader.dispose()


class _NeedsFullConstructor(Exception):
    """The document uses merge keys or explicit tags: the full constructor handles those."""


class _NodeBuilder:
    """Builds plain data from a composed node tree, several times faster than PyYAML's
    generic constructor, for the documents spec files are (maps, lists, plain scalars).

    Anything else (merge keys, explicit tags) is left to the full constructor, which applies the
    same rules. Aliases share one built object; an alias of a node being built is recursion
    and refused.
    """

    def __init__(self) -> None:
        self._done: dict[int, Any] = {}
        self._building: set[int] = set()

    def build(self, node: Node) -> Any:
        if node.__class__ is ScalarNode:
            # Plain strings are most of a spec; scalars need no alias bookkeeping.
            return node.value if node.tag == _STR else self._scalar(node)
        key = id(node)
        if key in self._done:
            return self._done[key]
        if key in self._building:
            raise ConstructorError(None, None, "recursive YAML alias", node.start_mark)
        self._building.add(key)
        value = self._mapping(node) if node.__class__ is MappingNode else self._sequence(node)
        self._building.discard(key)
        self._done[key] = value
        return value

    def _scalar(self, node: ScalarNode) -> Any:
        tag, text = node.tag, node.value
        if tag == _STR:
            return text
        if tag == _NULL:
            return None
        if tag == _BOOL and text in _BOOLS:
            return _BOOLS[text]
        if tag == _INT:
            number = go_parse_int(text.replace("_", ""))
            if number is not None:
                return number
        if tag == _FLOAT:
            if text in _SPECIAL_FLOATS:
                return _SPECIAL_FLOATS[text]
            try:
                return float(text.replace("_", ""))
            except ValueError:
                pass
        raise _NeedsFullConstructor

    def _mapping(self, node: MappingNode) -> dict[Any, Any]:
        if node.tag != _MAP:
            raise _NeedsFullConstructor
        result: dict[Any, Any] = {}
        build = self.build
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                raise _NeedsFullConstructor
            key = build(key_node)
            _refuse_repeated_key(node, key_node, key, result)
            result[key] = build(value_node)
        return result

    def _sequence(self, node: Node) -> list[Any]:
        if node.tag != _SEQ:
            raise _NeedsFullConstructor
        build = self.build
        return [build(item) for item in node.value]


def go_scalar_string(value: object) -> str | None:
    """How the reference turns a YAML scalar into a string field: ``5`` is ``"5"``, ``true`` is
    ``"true"``, ``1.5`` is ``"1.5"`` (Go's shortest float32 form). None for non-scalars."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if _INT64[0] <= value <= _UINT64_MAX:
            return str(value)
        return format_go_float32(float(value))
    if isinstance(value, float):
        return format_go_float32(value)
    return None


def format_go_float32(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'g', -1, 32)``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value) or abs(value) >= 3.4028235677973366e38:
        return "+Inf" if value > 0 else "-Inf"
    single = struct.unpack("f", struct.pack("f", value))[0]
    if single == 0:
        return "-0" if math.copysign(1.0, single) < 0 else "0"
    digits, exponent = _shortest_float32_digits(single)
    negative = single < 0
    sign = "-" if negative else ""
    # %e when the decimal exponent is < -4 or >= 6 (Go's rule for the shortest form).
    if exponent < -4 or exponent >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        exp_sign = "-" if exponent < 0 else "+"
        return f"{sign}{mantissa}e{exp_sign}{abs(exponent):02d}"
    point = exponent + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _shortest_float32_digits(single: float) -> tuple[str, int]:
    """The fewest significant digits that read back as the same float32, and the exponent."""
    packed = struct.pack("f", single)
    for precision in range(1, 10):
        text = f"{abs(single):.{precision - 1}e}"
        if struct.pack("f", float(text) * (1 if single > 0 else -1)) == packed:
            break
    mantissa, _, exp = text.partition("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    return digits, int(exp)
