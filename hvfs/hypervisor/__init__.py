"""The hypervisor: the one place where VMs are assembled and run, shared by every front end.

A per-user manager process (``daemon``; one per host as root) serves the VMs that
``hvfs run``, ``hvfs up`` and the other front ends hand it over its control socket
(``control``, ``client``). Front ends parse what users write into plain descriptions
(``spec``, ``mounts``); this package turns them into mount tables (``pool``), services
(``services``: the services of a group of VMs, from their options to their end) and
running VMs (``vmstart``, ``group``), and owns the lives of what they hold. The manager
outlives its clients, and its VMs outlive it: what it holds that the kernel cannot give
back is left with each VM's shim (native/init/shim.c) and in its state directory
(``layout``), from which a restarted manager resumes them.
"""
