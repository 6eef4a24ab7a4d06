"""roost hardware abstraction: ports, board profiles, platforms, runtime-neutral drivers (see docs/hal.md)."""
