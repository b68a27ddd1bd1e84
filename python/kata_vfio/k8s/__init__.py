"""Kubernetes: the node agent (inventory, CDI specs, device plugin) and the Pod Resources
client."""
