"""The hypervisor: the assembly shared by every front end (``hvfs run``, ``hvfs up``, and
later the Docker runtime) of a manager, its drivers and its services.

- ``services.py``: the services of a group of VMs, from their options to their end.
"""
