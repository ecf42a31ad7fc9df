"""The Python client: ``TokenAuth`` keeps an httpx client signed in to tokenstile (SPEC §5)."""

from tokenstile.client._auth import TokenAuth
from tokenstile.client._exceptions import LoginFailed, SessionEnded, TokenAuthError

__all__ = ["LoginFailed", "SessionEnded", "TokenAuth", "TokenAuthError"]
