"""The Dynamic Resource Allocation (DRA, ``resource.k8s.io/v1``) driver: whole IOMMU groups
prepared for a pod's ResourceClaims.

* :mod:`~kata_vfio.k8s.dra.ports`: what the kubelet plugin needs from the API server (reading
  claims, publishing ResourceSlices), as two small Protocols, and the device names both sides
  share;

Importing this package imports none of its modules.
"""
