"""Kubernetes: the node agent that serves whole IOMMU groups to the kubelet, and the client
Kata's path uses to ask the kubelet what a pod got.

Pure, no gRPC needed:

* :mod:`~kata_vfio.k8s.resources`: ``--resource NAME=VENDOR:DEVICE,...`` selectors;
* :mod:`~kata_vfio.k8s.inventory`: the allocatable units (whole IOMMU groups) with their
  health, reasons, nodes and locality, from one :func:`kata_vfio.scan` (shared with the DRA
  driver);
* :mod:`~kata_vfio.k8s.preferred`: the preferred allocation (NUMA, switch, root port);
* :mod:`~kata_vfio.k8s.cdispec`: the agent's CDI specs, written only on change;
* :mod:`~kata_vfio.k8s.allocation`: a pod's allocation as CDI names, the source policy, the
  one-function-two-sources check, and the sandbox's lookup (``sandbox_devices``);
* :mod:`~kata_vfio.k8s.manifests`: the DaemonSet, RuntimeClass, containerd and Kata snippets.

Serving and calling the kubelet (the ``k8s`` extra: grpcio, grpcio-tools, protobuf):

* :mod:`~kata_vfio.k8s.grpcapi`: the official protos, compiled at run time;
* :mod:`~kata_vfio.k8s.watch`: rescans on uevents and a timer, the inventory feed;
* :mod:`~kata_vfio.k8s.deviceplugin` and :mod:`~kata_vfio.k8s.agent`: the device plugin
  (``run_device_plugin``);
* :mod:`~kata_vfio.k8s.podresources`: the Pod Resources client;
* :mod:`~kata_vfio.k8s.dra`: the DRA kubelet plugin (``run_dra_plugin``): claims prepared by
  binding whole groups with the journal, one CDI spec per claim, a boot-keyed checkpoint.

Importing this package imports none of them.
"""
