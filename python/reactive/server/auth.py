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

* Tokens whose ``iss`` names one of the app's auth providers (``auth.py``; OIDC discovery
  and JWKS, :mod:`reactive.server.providers`) are checked against that provider's keys;
  :meth:`Authenticator.prepare` fetches missing keys first (the server awaits it before a
  token is checked, so checking never waits on the network).
* An admin key acting as a user: ``Convex <key>:<base64 of a JSON identity>`` (HTTP, as
  ``ConvexHttpClient.setAdminAuth(key, identity)`` and ``npx convex run --identity``
  send it), or ``impersonating`` in the sync ``Authenticate`` message: the caller gets that
  identity (``subject`` and ``issuer`` required; ``tokenIdentifier`` derived from them).

With nothing configured, every token is refused with a message that says so (Convex's
code ``NoAuthProvider`` when no provider matches). An empty (or whitespace-only) admin
key or JWT key is refused with ``ValueError``: it would let anyone in.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from reactive.server.providers import Providers, token_refused
from reactive.sync.session import AuthFailure

__all__ = ["Authenticator", "encode_acting_as"]


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
    providers: Providers = field(default_factory=lambda: Providers([]))

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
            key, _, acting_as = (value or "").partition(":")
            if not hmac.compare_digest(key.encode(), self.admin_key.encode()):
                raise AuthFailure("the admin key is not valid")
            return _acting_as(acting_as) if acting_as else None
        if token_type != "User":
            raise AuthFailure(f"unknown token type {token_type!r}")
        import jwt  # PyJWT

        if self.providers:
            try:
                issuer_claim = jwt.decode(value or "", options={"verify_signature": False}).get(
                    "iss"
                )
            except jwt.PyJWTError as exc:
                raise AuthFailure(f"the token is not valid: {exc}") from None
            provider = self.providers.match(issuer_claim)
            if provider is not None:
                return _identity(self.providers.verify(value or "", provider))
            if self.jwt_key is None:
                raise AuthFailure(
                    f"NoAuthProvider: no auth provider found matching the given token "
                    f"(issuer {issuer_claim!r}); the app's auth.py lists "
                    + ", ".join(repr(p.issuer) for p in self.providers.providers)
                )
        if self.jwt_key is None:
            raise AuthFailure(
                "NoAuthProvider: no authentication provider is configured on this server "
                "(list providers in the app's auth.py, or start it with --jwt-key)"
            )

        try:
            claims: dict[str, Any] = jwt.decode(
                value or "",
                self.jwt_key,
                algorithms=list(self.jwt_algorithms),
                issuer=self.jwt_issuer,
                audience=self.jwt_audience,
                options={"require": ["sub", "exp"], "verify_aud": self.jwt_audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise token_refused(exc) from None
        return _identity(claims)

    async def prepare(self, token_type: str, value: str | None) -> None:
        """Fetch what checking this token needs (an auth provider's keys); never raises.

        Awaited before the token is checked, so :meth:`__call__` never waits on the
        network.
        """
        if token_type == "User" and value and self.providers:
            await self.providers.prepare(value)

    def from_header(self, header: str | None) -> dict[str, Any] | None:
        """The identity of an HTTP ``Authorization`` header (``None`` without one).

        Raises:
            AuthFailure: the header holds a token that is refused.
        """
        parsed = _parse_header(header)
        return None if parsed is None else self(*parsed)

    async def from_header_async(self, header: str | None) -> dict[str, Any] | None:
        """:meth:`from_header` after :meth:`prepare` (fetching provider keys if needed).

        Raises:
            AuthFailure: the header holds a token that is refused.
        """
        parsed = _parse_header(header)
        if parsed is None:
            return None
        await self.prepare(*parsed)
        return self(*parsed)


def _parse_header(header: str | None) -> tuple[str, str] | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return "User", token.strip()
    if scheme.lower() == "convex":
        return "Admin", token.strip()
    raise AuthFailure("Authorization must be 'Bearer <token>' or 'Convex <admin key>'")


def _identity(claims: dict[str, Any]) -> dict[str, Any]:
    """Verified claims as Convex's identity (``subject``, ``issuer``, ``tokenIdentifier``)."""
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise AuthFailure("the token is not valid: its 'exp' claim must be a number")
    issuer = str(claims.get("iss", ""))
    identity = {k: v for k, v in claims.items() if k != "tokenType"}
    identity["subject"] = str(claims["sub"])
    identity["issuer"] = issuer
    identity["tokenIdentifier"] = f"{issuer}|{claims['sub']}"
    return identity


def encode_acting_as(identity: dict[str, Any]) -> str:
    """``identity`` as the admin key's suffix (base64 of its JSON), as the clients send."""
    return base64.b64encode(json.dumps(identity).encode()).decode()


def _acting_as(encoded: str) -> dict[str, Any]:
    """The identity an admin key acts as (base64 of a JSON object)."""
    try:
        padded = encoded + "=" * (-len(encoded) % 4)
        raw = base64.b64decode(padded.encode("ascii"), validate=False)
        attributes = json.loads(raw)
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise AuthFailure(
            f"the identity to act as is not base64 of a JSON object: {exc}"[:300]
        ) from None
    if not isinstance(attributes, dict):
        raise AuthFailure("the identity to act as must be a JSON object")
    subject, issuer = attributes.get("subject"), attributes.get("issuer")
    if not isinstance(subject, str) or not isinstance(issuer, str):
        raise AuthFailure("the identity to act as needs 'subject' and 'issuer' strings")
    identity = {k: v for k, v in attributes.items() if k != "tokenType"}
    identity["tokenIdentifier"] = f"{issuer}|{subject}"
    return identity
