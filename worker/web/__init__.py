"""`recon web`: the read-only audit page (Flask, Jinja templates, SVG drawn on the server)."""

from worker.web.app import create_app

__all__ = ["create_app"]
