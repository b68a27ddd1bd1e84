"""The kubelet's official ``.proto`` files (data only; see README.md here for their source)."""
