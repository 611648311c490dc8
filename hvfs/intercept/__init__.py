"""The HVFS driver: a seccomp filter in each VM and the loop that serves its notifications."""
