"""``--json`` keys are one style, snake_case, in every command.

Every subcommand found in the parser is either run here with ``--json`` on a copy of the
sample host, or listed with the reason it cannot run without a live VM or kernel; a new
subcommand fails until it is one or the other. Documents of other formats embedded in the
output (an OCI spec, CDI specs, Kubernetes objects, annotation maps) keep their own keys.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from cli_world import World, build_world, invocations, leaf_commands

SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*\Z")
# Subtrees whose keys belong to another format or are data (annotation keys, port ids...).
FOREIGN = (
    "/spec",  # an OCI runtime spec
    "/specs",  # CDI specs
    "/daemonset", "/runtimeclass",  # Kubernetes objects
    "*/annotations*", "/removed_annotations", "/annotations_added",
    "/added/*", "/replaced/*",  # the OCI entries an injection wrote
    "/errors",  # spec file paths
)  # fmt: skip
NEEDS_A_LIVE_SYSTEM = {
    ("info",): "opens a vfio-bound device",
    ("qemu", "hotplug"): "talks to a running QEMU",
    ("qemu", "unplug"): "talks to a running QEMU",
    ("qemu", "ports"): "talks to a running QEMU",
    ("qemu", "resume"): "talks to a running QEMU (tests/qemu/test_cli_qemu.py checks it)",
    ("k8s", "device-plugin"): "serves until stopped; logs, prints no JSON",
    ("k8s", "dra-plugin"): "serves until stopped; logs, prints no JSON",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("json"))


def _keys(document: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, key) of every object key, foreign subtrees left out."""
    if isinstance(document, dict):
        for key, value in document.items():
            where = f"{path}/{key}"
            yield path, key
            if not any(fnmatch.fnmatchcase(where, pattern) for pattern in FOREIGN):
                yield from _keys(value, where)
    elif isinstance(document, list):
        for item in document:
            yield from _keys(item, f"{path}[]")


def test_every_subcommand_is_checked_or_says_why_not(world: World) -> None:
    leaves = {path for path, _ in leaf_commands()}
    assert leaves == set(invocations(world)) | set(NEEDS_A_LIVE_SYSTEM)


@pytest.mark.parametrize(
    "path",
    sorted(set(dict(leaf_commands())) - set(NEEDS_A_LIVE_SYSTEM)),
    ids=" ".join,
)
def test_json_keys_are_snake_case(world: World, path: tuple[str, ...]) -> None:
    argv = invocations(world)[path]
    result = world.run(*argv, "--json")
    assert result.code in (0, 1), result
    document = json.loads(result.out)
    keys = list(_keys(document))
    assert keys, "the command printed no object"
    assert [f"{where}/{key}" for where, key in keys if not SNAKE.match(key)] == []


def test_the_walk_sees_nested_keys_and_skips_foreign_ones() -> None:
    document = {
        "devices": [{"bdf": "x", "camelCase": 1}],
        "spec": {"ociVersion": "1.1.0"},
        "added": {"cgroup_rules": [{"allowMe": True}]},
    }
    flagged = [k for _, k in _keys(document) if not SNAKE.match(k)]
    assert flagged == ["camelCase"]
