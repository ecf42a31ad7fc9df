"""FastAPI integration: mount tokenstile in an app, or run it as a service."""

from tokenstile.api.app import Tokenstile, create_app
from tokenstile.api.errors import install_error_handlers
from tokenstile.api.security import CurrentUser, OptionalUser
from tokenstile.core.codec import AccessClaims

__all__ = [
    "AccessClaims",
    "CurrentUser",
    "OptionalUser",
    "Tokenstile",
    "create_app",
    "install_error_handlers",
]
