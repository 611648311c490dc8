"""Raw system interfaces: the only package of HVFS that imports ctypes or issues raw syscalls.

Everything here is a thin, typed wrapper. Errors are ``OSError`` with the real errno and a
message naming the call and its arguments, so a failure deep in a sandbox set-up step still
says what the kernel refused.
"""
