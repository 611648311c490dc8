"""Sources: the file systems a VM's mounts come from. Sources never import each other."""

from hvfs.manager.sources.base import Scratch, Source, SourceError

__all__ = ["Scratch", "Source", "SourceError"]
