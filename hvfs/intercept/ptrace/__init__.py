"""The ptrace driver: a VM's calls served by tracing it, for kernels and sandboxes
without seccomp user notification (or its ADDFD, Linux 5.14).

Design (docs/ptrace.md says more, with what it costs):

* **The filter.** The same filter as the seccomp driver's, compiled from the same table,
  with ``SECCOMP_RET_TRACE`` where that one notifies (``filter.compile_trace_filter``):
  only the calls the configuration needs stop. Pid 1 installs it on itself without a
  listener and hands back a pidfd of itself instead (native/init/boot.c). While no tracer
  is attached, a stopped call fails with ENOSYS: a VM whose tracer is missing fails
  closed, it never runs a trapped call natively.
* **Who traces.** One thread per VM (``Tracer``, tracer.py, built on the exec tracer's handling of
  ptrace), because ptrace requests must all come from the tracing thread. It seizes pid 1
  before the manager sends START, so before pid 1 makes any call the filter stops (it
  makes none between installing the filter and START) and before the command execs: the
  wait for the tracer is the START handshake. Options: TRACESECCOMP, TRACEFORK, TRACEVFORK,
  TRACECLONE (every later process and thread is traced from its first instruction),
  TRACEEXEC, TRACESYSGOOD and EXITKILL (the VM never runs untraced: it dies with its
  tracer, so it cannot outlive the manager: ``kept`` is empty). Group-stops are kept with
  PTRACE_LISTEN, signals re-injected at their signal-delivery-stop, the exec stop resumed
  (or judged). A warm spare's tracer (hvfs.hypervisor.spares) seizes its pid 1 when the
  spare is made, and takes no status until the run binds it (``PtraceDriver.bind``).
* **Serving.** At a ``PTRACE_EVENT_SECCOMP`` stop the call has not run and its thread is
  stopped; the registers give the number and arguments, the decoders of the table build
  the same HVFS API request as under seccomp (``StoppedTracee`` is the seccomp tracee with
  nothing to prove afterwards: a traced thread's number cannot be reused before its tracer
  waited for it), and the same manager answers. The caller's credentials are kept per
  thread as under seccomp (``credcache``): the credential calls stop (what was kept is
  forgotten before they run; a umask is run to its exit at once), and every exec event
  forgets too.
* **Applying the answer** (``stopped.py``): CONTINUE resumes the call as it is (the kernel
  checks the filter again and lets it through); an errno or a value skips it (number -1)
  and sets its result; bytes are written into the caller's memory first; a served open
  is sent (SCM_RIGHTS) on a socket kept in the caller's process and received by the
  thread with one ``recvmsg`` run in place of its call (``kept.py``: kcmp-checked before
  and after, given up at fork, exec and any doubt), then returns the fd.
  Never a rewritten path for the kernel to read again: another thread could change that
  memory between the check and the kernel's read. Decisions rest on what the manager did
  itself (the very file it opened), as under seccomp.
* **Exec.** While a scanner is on, each exec is judged at PTRACE_EVENT_EXEC against the
  very files loaded (``/proc/PID/exe``, by inode), as the exec tracer does for the seccomp
  driver, by the same code; the separate exec tracer is not started then.
* **The loop in C** (hvfs/_native/tracer.c, where built; HVFS_NATIVE=0 forces the
  Python one): it waits, resumes the stops that need no decision (signals, group-stops),
  reads a seccomp stop's registers, writes an answer back with the resume, and runs a
  served open's ``recvmsg`` with its checks, each in one call with the GIL released.
  Decisions stay here.
* **Cost and limits.** One thread serves the whole VM, one call at a time: a served call
  that would block (a send to a full socket) holds the VM's other stopped calls until it
  completes. x86_64 only (the registers); CONTINUE keeps the race the seccomp driver's
  CONTINUE has, and is used where it has: only where nothing configured depends on it.
"""

from hvfs.intercept.ptrace.driver import PtraceDriver

__all__ = ["PtraceDriver"]
