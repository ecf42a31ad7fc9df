"""tokenstile: refresh-token authentication for Python HTTP APIs.

The service: ``tokenstile serve``. In a FastAPI app: :mod:`tokenstile.api`. Clients:
:mod:`tokenstile.client`. Services verifying tokens from a remote tokenstile:
:mod:`tokenstile.resource`.
"""

from tokenstile.errors import (
    AuthenticationError,
    ConfigurationError,
    CsrfFailed,
    InvalidCredentials,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    NotFound,
    RateLimited,
    RegistrationClosed,
    StoreUnavailable,
    TokenExpired,
    TokenReused,
    TokenRevoked,
    TokenstileError,
    UsernameTaken,
    WeakPassword,
)
from tokenstile.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "CsrfFailed",
    "InvalidCredentials",
    "InvalidRequest",
    "InvalidToken",
    "MissingToken",
    "NotFound",
    "RateLimited",
    "RegistrationClosed",
    "Settings",
    "StoreUnavailable",
    "TokenExpired",
    "TokenReused",
    "TokenRevoked",
    "TokenstileError",
    "UsernameTaken",
    "WeakPassword",
    "__version__",
]
