import gc
import sys

from hvfs import dataclass_cache

gc.disable()  # the imports' objects live as long as the process: no collection finds them (commands.py)
dataclass_cache.install()  # before the modules whose dataclasses it keeps compiled (a cold start's imports)
from hvfs.cli import main  # noqa: E402

gc.enable()
sys.exit(main())
