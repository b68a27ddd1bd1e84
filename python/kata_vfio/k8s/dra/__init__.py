"""The Dynamic Resource Allocation (DRA, ``resource.k8s.io/v1``) driver: whole IOMMU groups
prepared for a pod's ResourceClaims.

* :mod:`~kata_vfio.k8s.dra.ports`: what the kubelet plugin needs from the API server (reading
  claims, publishing ResourceSlices), as two small Protocols, and the device names both sides
  share;
* :mod:`~kata_vfio.k8s.dra.checkpoint`: the claims prepared, keyed by boot ID;
* :mod:`~kata_vfio.k8s.dra.claimspec`: one CDI spec per prepared claim;
* :mod:`~kata_vfio.k8s.dra.prepare`: prepare and unprepare (bind with the journal, rollback,
  deadline) and the recovery at start;
* :mod:`~kata_vfio.k8s.dra.service`: the gRPC services (registration, ``DRAPlugin`` v1 and
  v1beta1, ``DRAResourceHealth``);
* :mod:`~kata_vfio.k8s.dra.plugin`: ``run_dra_plugin``, the long-running kubelet plugin.

Importing this package imports none of its modules.
"""
