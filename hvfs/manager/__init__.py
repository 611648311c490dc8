"""The HVFS manager: a mount table per VM, path resolution, policy and request handlers.

The manager never imports the driver or the sandbox; it sees only HVFS API requests.
"""
