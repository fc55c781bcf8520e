"""The HTTP server: every Collection capability over FastAPI (``embedsearch serve``).

See ``docs/http.md`` for the routes, auth, limits and error shapes.
"""

from __future__ import annotations

from .app import create_app, create_app_from_env
from .limits import Limits

__all__ = ["Limits", "create_app", "create_app_from_env"]
