"""/healthz and /readyz for Kubernetes probes, served by aiohttp on the daemon's event loop.

/healthz returns 200 while the event loop serves requests, so a hung loop fails the liveness
probe. /readyz returns 200 once the daemon's services run, on the leader and on
standbys alike, and its JSON body reports whether this process is the Lease holder.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from aiohttp import web

log = structlog.get_logger("agent_autoscaler.health")


async def start_health_server(address: str, is_ready: Callable[[], bool], is_leader: Callable[[], bool | None]) -> web.AppRunner:
    """Start serving on `address` (host:port) and return the runner to clean up at shutdown."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ready = is_ready()
        return web.json_response({"ready": ready, "leader": is_leader()}, status=200 if ready else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = address.rpartition(":")
    await web.TCPSite(runner, host, int(port)).start()
    log.info("health server started", address=address)
    return runner
