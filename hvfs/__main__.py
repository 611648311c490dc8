import gc
import sys

from hvfs import coldset

coldset.install()  # first: what follows may come from its file (a library's ``import hvfs`` installs nothing)

gc.disable()  # the imports' objects live as long as the process: no collection finds them (commands.py)
if sys.argv[1:3] == ["manager", "serve"]:  # every cold run waits for its imports; the manager writes the cache
    from hvfs import dataclass_cache, deferred

    deferred.defer(*deferred.MANAGER)
    dataclass_cache.install()  # before the modules whose dataclasses it keeps compiled
    from hvfs.hypervisor import commands

    served = commands.serve_spawned(sys.argv[3:])  # with gc as the serve's imports want it
    if served is not None:
        sys.exit(served)
from hvfs.cli import main  # noqa: E402

gc.enable()
sys.exit(main())
