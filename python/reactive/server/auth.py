"""Authentication of clients: admin keys and JSON Web Tokens.

Both ``Authenticate`` messages and HTTP ``Authorization`` headers are checked here.

* ``Admin`` tokens (``Authorization: Convex <key>``) must equal the server's admin key.
* ``User`` tokens (``Authorization: Bearer <jwt>``) are verified with PyJWT against the
  configured key (HS256 shared secret, or a PEM public key for RS256/ES256), issuer and
  audience; the identity is the token's claims plus Convex's ``tokenIdentifier``
  (``"<issuer>|<subject>"``).

With nothing configured, every token is refused with a message that says so.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from reactive.sync.session import AuthFailure

__all__ = ["Authenticator"]


@dataclass
class Authenticator:
    """Checks tokens; call it as ``authenticator(token_type, value) -> identity``.

    Attributes:
        admin_key: The admin key, or ``None`` to refuse admin tokens.
        jwt_key: HS256 secret or PEM public key for user tokens, or ``None``.
        jwt_algorithms: Accepted algorithms (``["HS256"]``, ``["RS256"]``...).
        jwt_issuer: Required ``iss`` claim, if set.
        jwt_audience: Required ``aud`` claim, if set.
    """

    admin_key: str | None = None
    jwt_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256", "RS256", "ES256")
    jwt_issuer: str | None = None
    jwt_audience: str | None = None

    def __call__(self, token_type: str, value: str | None) -> dict[str, Any]:
        """The identity of a token.

        Raises:
            AuthFailure: the token is refused (message says why).
        """
        if token_type == "Admin":
            if self.admin_key is None:
                raise AuthFailure("admin keys are not accepted: the server has none configured")
            key = (value or "").split(":", 1)[0]
            if not hmac.compare_digest(key.encode(), self.admin_key.encode()):
                raise AuthFailure("the admin key is not valid")
            return {"tokenType": "Admin", "subject": "admin", "tokenIdentifier": "admin"}
        if token_type != "User":
            raise AuthFailure(f"unknown token type {token_type!r}")
        if self.jwt_key is None:
            raise AuthFailure(
                "no authentication provider is configured on this server (start it with "
                "--jwt-key to accept user tokens)"
            )
        import jwt  # PyJWT, imported only when user tokens are configured

        try:
            claims: dict[str, Any] = jwt.decode(
                value or "",
                self.jwt_key,
                algorithms=list(self.jwt_algorithms),
                issuer=self.jwt_issuer,
                audience=self.jwt_audience,
                options={"require": ["sub"], "verify_aud": self.jwt_audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise AuthFailure(f"the token is not valid: {exc}") from None
        issuer = str(claims.get("iss", ""))
        identity = dict(claims)
        identity["subject"] = str(claims["sub"])
        identity["issuer"] = issuer
        identity["tokenIdentifier"] = f"{issuer}|{claims['sub']}"
        return identity

    def from_header(self, header: str | None) -> dict[str, Any] | None:
        """The identity of an HTTP ``Authorization`` header (``None`` without one).

        Raises:
            AuthFailure: the header holds a token that is refused.
        """
        if not header:
            return None
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self("User", token.strip())
        if scheme.lower() == "convex":
            return self("Admin", token.strip())
        raise AuthFailure("Authorization must be 'Bearer <token>' or 'Convex <admin key>'")
