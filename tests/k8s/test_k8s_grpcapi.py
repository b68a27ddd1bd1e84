"""The kubelet protos compile at run time into separate modules, with the official names."""

from __future__ import annotations

import pytest

from kata_vfio.k8s.grpcapi import API_NAMES, load_api


def test_every_api_loads_under_its_own_module() -> None:
    modules = {name: load_api(name) for name in API_NAMES}
    assert len({api.messages.__name__ for api in modules.values()}) == len(API_NAMES)
    # Pod Resources and DRA health both use proto package 'v1' without colliding.
    pod = modules["podresources/v1"].messages
    health = modules["dra-health/v1"].messages
    assert pod.DESCRIPTOR.package == health.DESCRIPTOR.package == "v1"
    assert pod.__name__ != health.__name__
    assert load_api("podresources/v1") is modules["podresources/v1"]


def test_service_and_message_names_are_the_kubelets() -> None:
    plugin = load_api("deviceplugin/v1beta1")
    services = plugin.messages.DESCRIPTOR.services_by_name
    assert services["Registration"].full_name == "v1beta1.Registration"
    assert [m.name for m in services["DevicePlugin"].methods] == [
        "GetDevicePluginOptions",
        "ListAndWatch",
        "GetPreferredAllocation",
        "Allocate",
        "PreStartContainer",
    ]
    cdi = plugin.messages.CDIDevice(name="nvidia.com/pgpu=0000:18:00.0")
    assert plugin.messages.CDIDevice.FromString(cdi.SerializeToString()) == cdi
    pods = load_api("podresources/v1").messages.DESCRIPTOR.services_by_name
    assert pods["PodResourcesLister"].full_name == "v1.PodResourcesLister"
    assert hasattr(plugin.services, "add_DevicePluginServicer_to_server")


def test_unknown_api() -> None:
    with pytest.raises(ValueError, match="unknown kubelet API"):
        load_api("deviceplugin/v1")
