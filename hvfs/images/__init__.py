"""Images from Docker and OCI: recognised (``formats``), exported from a local Docker
engine (``engine``), unpacked layer by layer into a private cache (``unpack``, ``store``)
and listed or removed by ``hvfs images`` (``cli``)."""

from hvfs.manager.sources.base import SourceError


class ImageError(SourceError):
    """An image that cannot be used: the message names it, the problem and the fix."""
