"""GetPreferredAllocation: one NUMA node, then one switch, then one root port; deterministic."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from kata_vfio import Bdf
from kata_vfio.k8s.inventory import Locality, Unit, build_inventory
from kata_vfio.k8s.preferred import preferred_allocation
from kata_vfio.k8s.resources import default_resources


def _sample_units(sample_scan):  # type: ignore[no-untyped-def]
    gpus = build_inventory(sample_scan, default_resources(), "legacy").resource("nvidia.com/pgpu")
    return gpus.units, [u.id for u in gpus.healthy]


def test_sample_host_pairs_stay_under_one_switch(sample_scan) -> None:  # type: ignore[no-untyped-def]
    units, available = _sample_units(sample_scan)
    assert preferred_allocation(units, available, [], 2) == ("0000:18:00.0", "0000:1b:00.0")
    # A GPU on socket 1 pulls its switch sibling, not a GPU on socket 0.
    assert preferred_allocation(units, available, ["0000:86:00.0"], 2) == (
        "0000:83:00.0",
        "0000:86:00.0",
    )
    # Three do not fit under one switch: socket 0 (four free) rather than spreading.
    three = preferred_allocation(units, available, [], 3)
    assert {u.locality.numa_node for u in units if u.id in three} == {0}
    # Best fit: with one GPU left under a switch, a single GPU comes from there.
    assert preferred_allocation(units, [i for i in available if i != "0000:83:00.0"], [], 1) == (
        "0000:86:00.0",
    )


def _unit(index: int, numa: int | None, complex_: int, port: int, switch: int | None) -> Unit:
    bdf = Bdf.from_parts(0, 0x10 + index, 0, 0)
    return Unit(
        id=str(bdf),
        resource="example.com/gpu",
        group=index,
        functions=(),
        locality=Locality(
            numa_node=numa,
            root_complex=f"pci0000:{complex_:02x}",
            root_port=Bdf.from_parts(0, complex_, port, 0),
            switch=None if switch is None else Bdf.from_parts(0, switch, 0, 0),
        ),
    )


# Two sockets; socket 0: complex 0x10 with two switches (2 + 2 units) and a unit straight on a
# root port; socket 1: complex 0x80 with one switch of 3 units.
HOST = [
    _unit(0, 0, 0x10, 1, 0x20),
    _unit(1, 0, 0x10, 1, 0x20),
    _unit(2, 0, 0x10, 2, 0x21),
    _unit(3, 0, 0x10, 2, 0x21),
    _unit(4, 0, 0x10, 3, None),
    _unit(5, 1, 0x80, 1, 0x90),
    _unit(6, 1, 0x80, 1, 0x90),
    _unit(7, 1, 0x80, 1, 0x90),
]
IDS = [u.id for u in HOST]


def test_tightest_domain_first_then_best_fit() -> None:
    # Three fit under socket 1's switch; that beats socket 0's three across two switches.
    assert preferred_allocation(HOST, IDS, [], 3) == tuple(IDS[5:8])
    # Two fit under three switches; the smallest (2 units) first, then PCI order.
    assert preferred_allocation(HOST, IDS, [], 2) == tuple(IDS[0:2])
    # One: the unit alone on its root port is the best fit (keeps switches whole).
    assert preferred_allocation(HOST, IDS, [], 1) == (IDS[4],)
    # Four: nothing below a NUMA node fits; socket 0 gives two whole switches.
    assert preferred_allocation(HOST, IDS, [], 4) == tuple(IDS[0:4])
    # must_include across sockets: the rest fills from the must units' own switches first.
    assert preferred_allocation(HOST, IDS, [IDS[0], IDS[7]], 4) == (IDS[0], IDS[1], IDS[5], IDS[7])
    # Unknown IDs (not in the inventory) come last.
    assert preferred_allocation(HOST, ["zz", IDS[4]], [], 2) == (IDS[4], "zz")


def test_without_numa_information_switches_still_count() -> None:
    units = [_unit(i, None, 0x10, 1 + i // 2, 0x20 + i // 2) for i in range(4)]
    ids = [u.id for u in units]
    assert preferred_allocation(units, ids, [ids[3]], 2) == (ids[2], ids[3])


@st.composite
def _requests(draw: st.DrawFn) -> tuple[list[str], list[str], int]:
    available = draw(st.lists(st.sampled_from([*IDS, "x", "y"]), unique=True, max_size=10))
    must = draw(st.lists(st.sampled_from(available), unique=True)) if available else []
    size = draw(st.integers(0, 12))
    return available, must, size


@given(_requests(), st.randoms(use_true_random=False))
def test_properties(request: tuple[list[str], list[str], int], rng: random.Random) -> None:
    available, must, size = request
    chosen = preferred_allocation(HOST, available, must, size)
    assert len(chosen) == len(set(chosen))
    assert set(must) <= set(chosen)
    assert set(chosen) <= set(available)
    assert len(chosen) == max(len(must), min(size, len(available)))
    # Deterministic: the order the kubelet lists IDs in does not matter.
    shuffled = list(available)
    rng.shuffle(shuffled)
    assert preferred_allocation(HOST, shuffled, must, size) == chosen


def test_spreading_fills_the_biggest_switches_first() -> None:
    # One port, switches of 1, 2 and 2 free units: four go to the two pairs, not 1 + 2 + 1.
    units = [_unit(0, 0, 0x10, 1, 0x20)]
    units += [_unit(i, 0, 0x10, 1, 0x21) for i in (1, 2)]
    units += [_unit(i, 0, 0x10, 1, 0x22) for i in (3, 4)]
    ids = [u.id for u in units]
    assert preferred_allocation(units, ids, [], 4) == tuple(ids[1:5])
