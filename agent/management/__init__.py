"""Cloud management: twin configuration, reported device info and health, direct methods, C2D commands.

    management = agent.management.attach(context)   # registers handlers on context.uplink; inside a running
                                                      # event loop it also starts its background task
    await management.stop()                           # on shutdown

See docs/management.md for every property and method.
"""

from __future__ import annotations

from typing import Any

from agent.management.manager import Management

__all__ = ["Management", "attach"]


def attach(context: Any, **options: Any) -> Management:
    """Wire cloud management to an AgentContext; returns the Management.

    Called from inside the event loop it starts the background task at once; otherwise call ``start()`` there.
    """
    import asyncio

    management = Management(context, **options).attach()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return management
    management.start()
    return management
