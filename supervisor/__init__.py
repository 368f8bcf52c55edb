"""The process tree: what ``podgate serve`` (no config) needs to run several processes as one.

Modules:
- ``readiness``: the channel a child uses to tell its parent it is ready (a pipe carrying one
  JSON message per line), not a log line to match;
- ``process``: one child process in its own process group, its output relayed with a
  ``[name]`` prefix, stopped with its whole group;
- ``restart``: keep one child running, restarting it with backoff, giving up when it keeps
  dying before it ever became ready;
- ``server``: the one way podgate runs uvicorn in-process (the proxy, the endpoint, the proxy
  inside the tree).

It sits outside ``proxy/`` because the endpoint (``serverless/``) and the worker CLI speak
the readiness channel and run uvicorn too, and ``serverless/`` imports nothing of
``proxy/``. It imports nothing of podgate's other rooms. Nothing is imported here.
"""
