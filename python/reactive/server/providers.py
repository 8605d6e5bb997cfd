"""Auth providers from an app's ``auth.py``: OIDC discovery, JWKS, signature checks.

An app lists its providers as Convex's ``auth.config.ts`` does::

    # app/auth.py
    providers = [
        {"domain": "https://issuer.example", "application_id": "my-app"},   # OIDC
        {"type": "custom_jwt", "issuer": "https://auth.example", "jwks": "https://...",
         "algorithm": "RS256", "application_id": "my-app"},              # custom JWT
    ]

* OIDC (``domain``): the issuer is the domain; its keys come from
  ``{domain}/.well-known/openid-configuration`` → ``jwks_uri``; the token's ``aud`` must
  be ``application_id``. Algorithms RS256 and ES256.
* ``custom_jwt``: ``issuer``, ``jwks`` (the key set's URL) and ``algorithm`` (RS256 or
  ES256) are required; ``application_id``, when given, is the required ``aud``.

A token is matched to a provider by its ``iss`` (a trailing ``/`` ignored), then checked
against the key whose ``kid`` its header names. Keys are fetched once and cached per
provider; a token naming a ``kid`` the cache lacks refetches the key set (at most once per
:data:`REFRESH_INTERVAL_S`), so a provider that rotates its keys is followed. Fetches run
before the token is checked (:meth:`Providers.prepare`, awaited by the server), with
:data:`FETCH_TIMEOUT_S`; a provider that is down refuses its tokens with a message that
says so, and the event loop never waits on it.

Source: Convex's docs "Custom OIDC provider" and "Custom JWT provider"; RFC 7517 (JWK),
OpenID Connect Discovery 1.0.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from reactive.sync.session import AuthFailure

__all__ = [
    "FETCH_TIMEOUT_S",
    "REFRESH_INTERVAL_S",
    "Provider",
    "Providers",
    "parse_providers",
    "token_refused",
]

log = logging.getLogger("reactive.server")

FETCH_TIMEOUT_S = 5.0
"""Seconds a discovery document or key set may take to arrive."""
REFRESH_INTERVAL_S = 2.0
"""A provider's key set is refetched for an unknown ``kid`` at most this often."""
_ALGORITHMS = ("RS256", "ES256")


@dataclass
class Provider:
    """One accepted issuer of user tokens.

    Attributes:
        issuer: The ``iss`` its tokens carry (no trailing ``/``).
        application_id: The required ``aud``, or ``None`` (custom JWT only).
        jwks_url: The key set's URL (``None`` until discovered, for OIDC).
        discovery: True for OIDC (the key set's URL comes from the discovery document).
        algorithms: Accepted signature algorithms.
    """

    issuer: str
    application_id: str | None
    jwks_url: str | None
    discovery: bool
    algorithms: tuple[str, ...]
    keys: dict[str | None, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = 0.0
    tried_at: float = -1e9
    error: str | None = None
    lock: asyncio.Lock | None = None


def _normalize(issuer: str) -> str:
    return issuer.rstrip("/")


def _text(entry: dict[str, Any], key: str, where: str, required: bool = True) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: {key!r} must be a non-empty string, not {value!r:.80}")
    return value.strip()


def parse_providers(raw: Any) -> list[Provider]:
    """The providers of an app's ``auth.py`` ``providers`` list.

    Raises:
        ValueError: an entry is malformed (the message names it and the field).
    """
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        raise ValueError(f"auth.py: providers must be a list, not {type(raw).__name__}")
    out: list[Provider] = []
    for n, entry in enumerate(raw):
        where = f"auth.py: providers[{n}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a dict, not {type(entry).__name__}")
        kind = entry.get("type", "oidc")
        if kind == "custom_jwt":
            issuer = _text(entry, "issuer", where)
            jwks = _text(entry, "jwks", where)
            algorithm = _text(entry, "algorithm", where)
            if algorithm not in _ALGORITHMS:
                raise ValueError(
                    f"{where}: algorithm must be one of {_ALGORITHMS}, not {algorithm!r}"
                )
            assert issuer is not None and jwks is not None and algorithm is not None
            out.append(
                Provider(
                    _normalize(issuer),
                    _text(entry, "application_id", where, required=False),
                    jwks,
                    False,
                    (algorithm,),
                )
            )
        elif kind == "oidc":
            domain = _text(entry, "domain", where)
            application_id = _text(entry, "application_id", where)
            assert domain is not None
            out.append(Provider(_normalize(domain), application_id, None, True, _ALGORITHMS))
        else:
            raise ValueError(f"{where}: type must be 'oidc' (the default) or 'custom_jwt'")
    return out


async def _get_json(url: str) -> Any:
    import httpx

    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_S, follow_redirects=True) as client:
        response = await client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()


class Providers:
    """The providers of one server, with their cached keys."""

    def __init__(self, providers: list[Provider]) -> None:
        self.providers = providers

    def __bool__(self) -> bool:
        return bool(self.providers)

    def match(self, issuer: Any) -> Provider | None:
        """The provider of tokens issued by ``issuer``, if any."""
        if not isinstance(issuer, str):
            return None
        wanted = _normalize(issuer)
        return next((p for p in self.providers if p.issuer == wanted), None)

    async def prepare(self, token: str) -> None:
        """Fetch the keys ``token`` needs if they are not cached (never raises)."""
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return  # malformed: verify() says so
        provider = self.match(claims.get("iss"))
        if provider is None:
            return
        kid = header.get("kid")
        if provider.fetched_at and (kid in provider.keys or (kid is None and provider.keys)):
            return
        if time.monotonic() - provider.tried_at < REFRESH_INTERVAL_S:
            return  # fetched (or failed) a moment ago: do not hammer the provider
        if provider.lock is None:
            provider.lock = asyncio.Lock()
        async with provider.lock:
            if time.monotonic() - provider.tried_at < REFRESH_INTERVAL_S:
                return
            await self._fetch(provider)

    async def _fetch(self, provider: Provider) -> None:
        provider.tried_at = time.monotonic()
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S * 2):
                if provider.discovery:
                    config = await _get_json(f"{provider.issuer}/.well-known/openid-configuration")
                    uri = config.get("jwks_uri") if isinstance(config, dict) else None
                    if not isinstance(uri, str):
                        raise ValueError("the discovery document has no jwks_uri")
                    provider.jwks_url = uri
                assert provider.jwks_url is not None
                document = await _get_json(provider.jwks_url)
            keys: dict[str | None, jwt.PyJWK] = {}
            entries = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(entries, list):
                raise ValueError("the key set has no 'keys' list")
            for entry in entries:
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK(entry)
                except jwt.PyJWTError:
                    continue  # a key type or algorithm this server does not use
                keys[entry.get("kid")] = key
            if not keys:
                raise ValueError("the key set holds no usable signing key")
        except Exception as exc:
            provider.error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning(
                "auth provider %s: fetching its keys failed: %s", provider.issuer, provider.error
            )
            return
        provider.keys = keys
        provider.fetched_at = time.monotonic()
        provider.error = None

    def verify(self, token: str, provider: Provider) -> dict[str, Any]:
        """The verified claims of ``token`` from ``provider`` (keys already prepared).

        Raises:
            AuthFailure: unknown key, bad signature, wrong audience, expired, no ``exp``.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthFailure(f"the token is not valid: {exc}") from None
        kid = header.get("kid")
        key = provider.keys.get(kid)
        if key is None and kid is None and len(provider.keys) == 1:
            key = next(iter(provider.keys.values()))
        if key is None:
            if provider.error is not None and not provider.keys:
                raise AuthFailure(
                    f"the auth provider {provider.issuer} cannot be reached to check the "
                    f"token ({provider.error}); try again later"
                )
            raise AuthFailure(
                f"the token is not valid: its key {kid!r} is not among the keys of "
                f"{provider.issuer}"
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(provider.algorithms),
                audience=provider.application_id,
                options={
                    "require": ["sub", "exp", "iss"],
                    "verify_aud": provider.application_id is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise token_refused(exc) from None
        return claims


def token_refused(exc: Exception) -> AuthFailure:
    """The client-facing refusal of a token PyJWT rejected (a missing ``exp`` named)."""
    if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim == "exp":
        return AuthFailure(
            "the token is not valid: it has no 'exp' (expiration) claim; tokens that never "
            "expire are refused"
        )
    return AuthFailure(f"the token is not valid: {exc}")
