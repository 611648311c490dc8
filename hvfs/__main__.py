import gc
import sys

gc.disable()  # the imports' objects live as long as the process: no collection finds them (commands.py)
from hvfs.cli import main  # noqa: E402

gc.enable()
sys.exit(main())
