"""HVFS: a hypervisor file system for Linux machines without virtualization."""

__version__ = "0.1.0"
