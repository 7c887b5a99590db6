"""The web service (``fcnseg serve``): segment uploaded images over HTTP.

Needs the ``serve`` extra (``pip install 'fcnseg[serve]'``: FastAPI, uvicorn,
python-multipart); ``import fcnseg`` never loads it.
"""

from __future__ import annotations

from .app import ServeLimits, create_app

__all__ = ["ServeLimits", "create_app"]
