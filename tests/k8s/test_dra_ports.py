"""The names the DRA plugin and its ResourceSlices share: unit IDs as DRA device names."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kata_vfio.errors import InvalidInputError
from kata_vfio.k8s.dra.ports import ClaimRef, device_name, pool_name, unit_id_of

# A DRA device name: a lowercase RFC 1123 label of at most 63 characters.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

unit_ids = st.builds(
    "{:04x}:{:02x}:{:02x}.{}".format,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0x1F),
    st.integers(0, 7),
)


@given(unit_ids)
def test_a_unit_id_becomes_a_dns_label_and_back(unit_id: str) -> None:
    name = device_name(unit_id)
    assert DNS_LABEL.match(name), name
    assert unit_id_of(name) == unit_id


@given(st.text(max_size=40))
def test_any_other_text_is_no_device_of_ours_or_round_trips(text: str) -> None:
    unit_id = unit_id_of(text)
    assert unit_id is None or device_name(unit_id) == text


@pytest.mark.parametrize("bad", ["0000:18:00.8", "0000:18:00", "0000:18:00.0 ", "0000:1G:00.0"])
def test_an_id_that_is_no_pci_address_is_refused_with_its_value(bad: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(repr(bad))):
        device_name(bad)


def test_the_pool_is_the_node_and_a_claim_reads_well() -> None:
    assert pool_name("worker-1") == "worker-1"
    assert str(ClaimRef("ns", "gpu", "1234")) == "ns/gpu (uid 1234)"
