"""Authentication of clients: admin keys and JSON Web Tokens.

Both ``Authenticate`` messages and HTTP ``Authorization`` headers are checked here.

* ``Admin`` tokens (``Authorization: Convex <key>``) must equal the server's admin key.
  An admin-key caller has no user identity (``None``), as in Convex.
* ``User`` tokens (``Authorization: Bearer <jwt>``) are verified with PyJWT against the
  configured key (HS256 shared secret, or a PEM public key for RS256/ES256 — needs the
  ``cryptography`` package), issuer and audience, and must carry ``sub`` and ``exp``. The
  identity is the token's claims with ``subject``, ``issuer`` and Convex's
  ``tokenIdentifier`` (``"<issuer>|<subject>"``) always set from ``sub``/``iss`` (a claim
  cannot override them), ``exp`` kept as a number, and no ``tokenType`` key: nothing may
  derive admin rights from an identity's claims.

With nothing configured, every token is refused with a message that says so. An empty
(or whitespace-only) admin key or JWT key is refused with ``ValueError``: it would let
anyone in.
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

    def __post_init__(self) -> None:
        for name in ("admin_key", "jwt_key"):
            key = getattr(self, name)
            if key is not None and not str(key).strip():
                raise ValueError(
                    f"{name} must not be empty: an empty key would let anyone in "
                    "(leave it unset to refuse such tokens)"
                )

    def __call__(self, token_type: str, value: str | None) -> dict[str, Any] | None:
        """The identity of a token (``None`` for an admin key: it has no user identity).

        Raises:
            AuthFailure: the token is refused (message says why).
        """
        if token_type == "Admin":
            if self.admin_key is None:
                raise AuthFailure("admin keys are not accepted: the server has none configured")
            key = (value or "").split(":", 1)[0]
            if not hmac.compare_digest(key.encode(), self.admin_key.encode()):
                raise AuthFailure("the admin key is not valid")
            return None
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
                options={"require": ["sub", "exp"], "verify_aud": self.jwt_audience is not None},
            )
        except jwt.MissingRequiredClaimError as exc:
            if exc.claim == "exp":
                raise AuthFailure(
                    "the token is not valid: it has no 'exp' (expiration) claim; tokens "
                    "that never expire are refused"
                ) from None
            raise AuthFailure(f"the token is not valid: {exc}") from None
        except jwt.PyJWTError as exc:
            raise AuthFailure(f"the token is not valid: {exc}") from None
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise AuthFailure("the token is not valid: its 'exp' claim must be a number")
        issuer = str(claims.get("iss", ""))
        identity = {k: v for k, v in claims.items() if k != "tokenType"}
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
