"""The HTTP service and web page: ``create_app(backend, prompt_style, settings)`` and uvicorn runners."""

from .app import create_app
from .runner import BackgroundServer, run_server
from .settings import ServeSettings

__all__ = ["create_app", "run_server", "BackgroundServer", "ServeSettings"]
