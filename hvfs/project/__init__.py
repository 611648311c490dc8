"""Projects: a set of VMs described in hvfs.toml, run by one manager (``hvfs up``)."""
