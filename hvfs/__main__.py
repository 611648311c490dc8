import sys

from hvfs.cli import main

sys.exit(main())
