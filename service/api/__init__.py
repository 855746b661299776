"""HTTP API: app factory, thin handlers, one error-to-HTTP map."""

from service.api.app import create_app

__all__ = ["create_app"]
