#!/bin/sh
# The native side of the conformance suite: runs the probe in a private mount namespace
# with a read-only bind at $RO and a tmpfs at $OTHER, as the VM side has them.
#   PROBE=… WORK=… RO_SOURCE=… RO=… OTHER=… native.sh [WRAPPER...]
# PROBE is the probe directory (tests/conformance/probe), which python3 runs by its path.
# WRAPPER (e.g. in_userns.py, or setpriv …) is how the probe itself is started.
set -eu
exec unshare --mount --propagation private sh -euc '
    mount --bind "$RO_SOURCE" "$RO" && mount -o remount,bind,ro "$RO"
    mount -t tmpfs -o mode=1777 tmpfs "$OTHER"
    exec "$@" /usr/bin/python3 "$PROBE" "$WORK" --ro "$RO" --other "$OTHER"
' native "$@"
