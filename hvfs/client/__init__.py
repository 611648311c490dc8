"""HVFS as a Python library: ``hvfs.VM`` and ``hvfs.Project`` (docs/python-api.md), clients
of the user's manager over its control protocol, as the command line is."""
