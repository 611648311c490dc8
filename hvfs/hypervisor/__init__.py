"""The hypervisor's assembly, shared by every front end (``hvfs run``, ``hvfs up``, and
the manager that outlives them): from plain descriptions of what a VM is made of to the
live objects that serve it. Front ends parse what users write into those descriptions;
this package turns them into mount tables (``mounts``, ``pool``) and services
(``services``: the services of a group of VMs, from their options to their end), and owns
the lives of what they hold."""
