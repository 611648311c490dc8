"""Sources: the file systems a VM's mounts come from.

One module per kind (host, memory, overlay, image, devices, synth), each a ``Source``
(the contract, in ``base``) and a ``SourceKind`` (its options and factory, ``schema``);
``registry`` lists them all and turns plain descriptions into sources. Sources never
import each other, nor the registry.
"""

from hvfs.manager.sources.base import Scratch, Source, SourceError

__all__ = ["Scratch", "Source", "SourceError"]
