"""Decoders: a syscall's raw arguments to an HVFS API request, one module per family, as
``hvfs.manager.handlers`` serves them (opening, names, attrs, query, sockets, sending).

Each decoder only unpacks arguments and reads the caller's memory, through the tracee
protocol (``tracee.py``); every decision is the manager's. The syscall table
(``hvfs.intercept.syscalls``) carries each syscall's decoder. Nothing here knows which
driver got the call: seccomp, ptrace or a test's fake.
"""
