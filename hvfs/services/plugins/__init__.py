"""The services as hvfs assembles them: one module each, defining ``SERVICE`` (see
hvfs.services.base for the contract). Imported by every ``hvfs`` command for its flags:
each imports its implementation inside its functions."""
