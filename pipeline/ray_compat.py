"""Every use of Ray's private names, in one place.

An embedded Ray must listen on 127.0.0.1 only, pick a free port for its dashboard agent,
and see the per-run token this process sets in its environment. ``ray.init`` has no
option for the first two, and Ray reads its authentication settings once; so these
reach into Ray's modules, here and nowhere else. ``tests/test_compat.py`` checks each
name on the installed Ray, so an upgrade that moves one fails there, naming it.

- ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``: Ray's local-only switch, read at
  import (the environment variable ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is too late);
- ``ray._private.parameter.RayParams``: its ``dashboard_agent_listen_port`` default
  (Ray's fixed 52365 is taken by a second embedded Ray on the machine);
- ``ray._raylet.Config`` and ``AuthenticationTokenLoader``: re-read the settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray._private.ray_constants as ray_constants
from ray._private.parameter import RayParams
from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

__all__ = ["local_only", "refresh_auth"]


def refresh_auth() -> None:
    """Make this process's Ray see the authentication settings of its environment now:
    Ray reads them (RayConfig, the token cache) once, at import or first use."""
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """While a new Ray starts: Ray's local-only mode (its node's address 127.0.0.1, not
    the host's). ``ray.init`` turns a given 127.0.0.1 into the host's address otherwise;
    the switch is read at import, so it is set on the loaded module here. And its
    dashboard agent's HTTP port chosen free (0), not Ray's fixed 52365, which a second
    embedded Ray on the machine would find taken (its agent then runs without its HTTP
    server); ``ray.init`` has no option for it, so the default is given to RayParams."""
    before, params = ray_constants.ENABLE_RAY_CLUSTER, RayParams.__init__

    def free_agent_port(self: RayParams, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("dashboard_agent_listen_port", 0)
        params(self, *args, **kwargs)

    ray_constants.ENABLE_RAY_CLUSTER = False
    RayParams.__init__ = free_agent_port  # type: ignore[method-assign]
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        RayParams.__init__ = params  # type: ignore[method-assign]
