"""CDI benchmarks for pytest-benchmark: ``pytest benches/test_cdi_bench.py --benchmark-enable``.

Without ``--benchmark-enable`` (the project default) each one runs once as a smoke test. The
figures with same-run ratios come from ``python benches/run_cdi_bench.py`` (CDI-RESULTS.md).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kata_vfio.cdi import Registry
from kata_vfio.cdi import registry as registry_module
from kata_vfio.cdi.yamlgo import HAS_LIBYAML
from run_cdi_bench import (
    DEVICES_PER_FILE,
    FILES,
    INJECTED,
    MANY_NODES,
    inject_many,
    injection_setup,
    many_nodes_setup,
    strict_yaml_parse,
    write_corpus,
)


@pytest.fixture(scope="module", params=["yaml", "json"])
def corpus(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp(f"cdi-{request.param}")
    write_corpus(directory, request.param)
    return directory


@pytest.fixture
def trusting() -> Iterator[None]:
    # The corpus was written a moment ago; a long-lived registry sees old files.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry_module, "_RACY_WINDOW_NS", -(10**18))
        yield


def test_full_load(benchmark: Any, corpus: Path) -> None:
    def load() -> Registry:
        registry = Registry([corpus])
        registry.refresh()
        return registry

    registry = benchmark.pedantic(load, rounds=3, iterations=1)
    assert len(registry.device_names()) == FILES * DEVICES_PER_FILE
    assert registry.errors == {}


def test_parse_only_baseline(benchmark: Any, corpus: Path) -> None:
    def parse() -> int:
        count = 0
        for path in sorted(corpus.iterdir()):
            data = path.read_bytes()
            if path.suffix == ".json":
                document = json.loads(data)
            else:
                document = yaml.load(
                    data, Loader=yaml.CSafeLoader if HAS_LIBYAML else yaml.SafeLoader
                )
            count += len(document["devices"])
        return count

    assert benchmark.pedantic(parse, rounds=3, iterations=1) == FILES * DEVICES_PER_FILE


def test_refresh_unchanged(benchmark: Any, corpus: Path, trusting: None) -> None:
    registry = Registry([corpus])
    registry.refresh()
    report = benchmark(registry.refresh)
    assert report.unchanged == FILES
    assert (report.added, report.changed, report.removed) == ((), (), ())


def test_inject_eight_devices(benchmark: Any, tmp_path: Path) -> None:
    registry, oci, names = injection_setup(tmp_path / "cdi")
    registry.refresh()
    before = copy.deepcopy(oci)
    result = benchmark(registry.inject, oci, names)
    assert len(result.devices) == INJECTED
    assert len(result.added.devices) == 2 * INJECTED + 1
    assert oci == before


@pytest.mark.parametrize("count", [MANY_NODES // 10, MANY_NODES], ids=["2k", "20k"])
def test_inject_many_device_nodes(benchmark: Any, count: int) -> None:
    oci, edits, host = many_nodes_setup(count)
    before = copy.deepcopy(oci)
    # Half the nodes replace entries already there: count // 2 old entries all go.
    assert benchmark.pedantic(inject_many, args=(oci, edits, host), rounds=3, iterations=1) == count
    assert oci == before


@pytest.mark.parametrize("pure_python", [False, True], ids=["libyaml", "pure-python"])
def test_strict_yaml_loader(
    benchmark: Any, tmp_path_factory: pytest.TempPathFactory, pure_python: bool
) -> None:
    directory = tmp_path_factory.mktemp("yaml-loader")
    write_corpus(directory, "yaml", files=10)
    benchmark.pedantic(strict_yaml_parse, args=(directory, pure_python), rounds=2, iterations=1)
    assert len(list(directory.iterdir())) == 10
