"""The VM: a sandbox of Linux namespaces with a pid 1 and a read-only boot view as its root."""
