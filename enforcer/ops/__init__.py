"""The socket's ops, one module per domain, all in one shape: `register(server, ...)` with
the parts that domain's handlers need. The composition root (daemon.py) calls each one;
no component imports its own handlers. Arguments are checked with `args`."""
