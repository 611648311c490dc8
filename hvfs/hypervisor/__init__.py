"""The hypervisor: the one place where VMs are assembled and run, shared by every front end.

A per-user manager process (``daemon``; one per host as root) serves the VMs that
``hvfs run``, ``hvfs up`` and the other front ends hand it over its control socket
(``control``, ``client``). It outlives its clients, and its VMs outlive it: what it holds
that the kernel cannot give back is left with each VM's shim (native/init/shim.c) and in
its state directory (``layout``), from which a restarted manager resumes them.
"""
