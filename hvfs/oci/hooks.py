"""OCI hooks, run as runc runs them: each program with its args and env, the container's
state as JSON on its stdin, within its timeout; one that fails stops what it is for
(prestart, createRuntime) or is only reported (poststart, poststop)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from hvfs.oci.bundle import BundleError


def run_hooks(kind: str, hooks: list[dict[str, Any]], state: dict[str, Any]) -> None:
    """Run the hooks of ``kind`` in order; BundleError for the first that fails."""
    data = json.dumps(state).encode()
    for hook in hooks:
        path = str(hook.get("path", ""))
        args = [str(a) for a in hook.get("args") or [path]]
        env = dict(str(e).partition("=")[::2] for e in hook.get("env") or [])
        timeout = hook.get("timeout")
        try:
            done = subprocess.run(
                args,
                executable=path,
                input=data,
                env=env,
                capture_output=True,
                timeout=float(timeout) if timeout else None,
                close_fds=True,
            )
        except subprocess.TimeoutExpired:
            raise BundleError(f"{kind} hook {path}: timed out after {timeout}s") from None
        except OSError as e:
            raise BundleError(f"{kind} hook {path}: {e.strerror}") from None
        if done.returncode != 0:
            said = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()
            raise BundleError(f"{kind} hook {path} exited {done.returncode}" + (f": {said[-1]}" if said else ""))
