"""``GetPreferredAllocation``: which of the available units a pod should get.

The kubelet asks for ``size`` IDs out of ``available``, ``must_include`` among them. Devices
that talk to each other (GPUs doing peer-to-peer, a GPU and a NIC doing GPUDirect) are fastest
under one PCIe switch and slow across sockets, so the choice prefers, in this order: one NUMA
node, then one PCIe switch (the units' nearest common upstream bridge), then one root port,
then one root complex. The rule:

1. Find the tightest domain (switch, then root port, root complex, NUMA node) that holds every
   ``must_include`` unit and at least ``size`` units; among several, take the one with the
   fewest available units (best fit: bigger domains stay whole for bigger pods), then the one
   first in PCI order. A unit straight on a root port is alone below it (its own switch
   domain); a domain whose locality is unknown (no NUMA information) never counts as one.
2. Inside it (or over the whole host when nothing fits), start from ``must_include`` and add
   one unit at a time: the one that opens the fewest new domains, a new NUMA node weighing
   more than any number of new switches; on a tie, the one in the domains with the most units
   left (filling big domains first keeps the count of domains low), then PCI order. IDs the
   inventory does not know come last.

Deterministic: the same inputs give the same answer (ties go to PCI order). Pure and in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kata_vfio._core import Bdf
from kata_vfio.errors import BdfError
from kata_vfio.k8s.inventory import Unit

__all__ = ["preferred_allocation"]

_LEVELS = 4  # NUMA node, root complex, root port, switch (each inside the one before)


@dataclass(frozen=True, slots=True)
class _Item:
    id: str
    order: tuple[int, int, int, int, int, str]
    key: tuple[object, ...]
    known: bool = True


def preferred_allocation(
    units: Mapping[str, Unit] | Sequence[Unit],
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
) -> tuple[str, ...]:
    """``size`` IDs from ``available`` (``must_include`` first among them), by the rule of the
    module docstring. ``units`` gives the locality of known IDs; an unknown ID has none and
    is taken last. Fewer than ``size`` available: all of them."""
    by_id = units if isinstance(units, Mapping) else {u.id: u for u in units}
    items = sorted(
        {_item(unit_id, by_id.get(unit_id)) for unit_id in (*available, *must_include)},
        key=lambda i: i.order,
    )
    wanted = set(must_include)
    must = [i for i in items if i.id in wanted]
    if size <= len(must):
        return tuple(i.id for i in must)
    pool = _tightest_domain(items, must, size) or items
    return tuple(i.id for i in _greedy(pool, must, size))


def _item(unit_id: str, unit: Unit | None) -> _Item:
    try:
        bdf = Bdf(unit_id)
        order = (0, bdf.domain, bdf.bus, bdf.device, bdf.function, "")
    except BdfError:
        order = (1, 0, 0, 0, 0, unit_id)
    if unit is None:
        return _Item(unit_id, order, (None,) * _LEVELS, known=False)
    place = unit.locality
    # A unit straight on a root port (or on the root bus) is alone below it: its own domain.
    alone = ("unit", unit_id)
    port = place.root_port or alone
    key = (place.numa_node, place.root_complex or None, port, place.switch or port)
    return _Item(unit_id, order, key)


def _tightest_domain(items: list[_Item], must: list[_Item], size: int) -> list[_Item] | None:
    must_ids = {m.id for m in must}
    for level in range(_LEVELS - 1, -1, -1):
        fitting = [
            domain
            for key, domain in _domains(items, level).items()
            if key[level] is not None and len(domain) >= size and must_ids <= {i.id for i in domain}
        ]
        if fitting:
            return min(fitting, key=lambda d: (len(d), d[0].order))
    return None


def _greedy(pool: list[_Item], must: list[_Item], size: int) -> list[_Item]:
    picked = list(must)
    opened: list[set[tuple[object, ...]]] = [
        {i.key[: level + 1] for i in picked} for level in range(_LEVELS)
    ]
    rest = [i for i in pool if i not in must]
    left = [_counts(rest, level) for level in range(_LEVELS)]

    def rank(item: _Item) -> tuple[object, ...]:
        prefixes = [item.key[: level + 1] for level in range(_LEVELS)]
        new = tuple(int(p not in opened[level]) for level, p in enumerate(prefixes))
        room = tuple(-left[level][p] for level, p in enumerate(prefixes))
        return (item.known is False, new, room, item.order)

    while len(picked) < size and rest:
        best = min(rest, key=rank)
        rest.remove(best)
        picked.append(best)
        for level in range(_LEVELS):
            prefix = best.key[: level + 1]
            opened[level].add(prefix)
            left[level][prefix] -= 1
    return sorted(picked, key=lambda i: i.order)


def _counts(items: list[_Item], level: int) -> dict[tuple[object, ...], int]:
    return {key: len(domain) for key, domain in _domains(items, level).items()}


def _domains(items: list[_Item], level: int) -> dict[tuple[object, ...], list[_Item]]:
    domains: dict[tuple[object, ...], list[_Item]] = {}
    for item in items:
        domains.setdefault(item.key[: level + 1], []).append(item)
    return domains
