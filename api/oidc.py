"""OIDC bearer tokens for cities with a single sign-on: JWTs checked against the identity provider's keys.

The keys come from a JWKS URL (fetched with httpx, kept ``oidc_jwks_cache_s``, fetched again early
when a token names a key id not seen yet, at most every ``JWKS_REFETCH_S``; a failed fetch is tried
again after ``JWKS_RETRY_S``, one fetch at a time, and while it runs only requests that have no key
to check with wait for it) or from a file
(``CITYGW_OIDC_JWKS_FILE``: a JWKS document or one PEM public key). Only asymmetric algorithms are
accepted, so a token can never be signed with a public key as an HMAC secret. Issuer, audience and
expiry are required and checked against the app's clock; the role and the granted sites come from
configured claims (a dotted path such as ``realm_access.roles`` reaches into nested claims).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from threading import Lock
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from api.security import Principal, Role, TokenRefused
from api.settings import ApiSettings

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
JWKS_REFETCH_S = 30.0
JWKS_RETRY_S = 5.0
_JWT_RE = re.compile(r"^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
# Highest first: a token naming several CityGW roles gets the strongest one it names.
_ROLES_BY_RANK = (Role.ADMIN, Role.ENGINEER, Role.TRANSIT, Role.UTILITY)
_MAX_ACTOR = 200

SigningKey = jwt.PyJWK | RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts, the first a JSON object: what a JWS in compact form looks like."""
    return _JWT_RE.fullmatch(token) is not None


class IssuerKeys:
    """The identity provider's public keys by key id, from a JWKS URL or a file."""

    def __init__(
        self,
        *,
        jwks_url: str | None,
        jwks_file: Path | None,
        cache_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = jwks_url
        self._cache_s = cache_s
        self._monotonic = monotonic
        # Held by the one request fetching; the state below changes only under it (and wholesale).
        self._fetching = Lock()
        self._keys: dict[str | None, SigningKey] = {}
        self._fetched_at: float | None = None  # the last fetch that brought keys
        self._retry_at = 0.0  # after a failed fetch, none is tried before this
        self.fetches = 0
        if jwks_file is not None:
            self._keys = _parse_keys(jwks_file.read_bytes(), str(jwks_file))

    def key(self, kid: str | None) -> SigningKey:
        """The key a token's ``kid`` names (a lone key without kid serves every token)."""
        if self._url is not None:
            self._refresh(kid)
        key = self._lookup(kid)
        if key is not None:
            return key
        if not self._keys:
            raise TokenRefused(
                "the sign-on's keys cannot be fetched; try again later",
                status=503,
                retry_after_s=JWKS_RETRY_S,
            )
        raise TokenRefused(f"the token's key id {kid!r} is not one of the issuer's keys")

    def _lookup(self, kid: str | None) -> SigningKey | None:
        keys = self._keys
        if kid in keys:
            return keys[kid]
        return keys[None] if len(keys) == 1 and None in keys else None

    def _due(self, kid: str | None, now: float) -> bool:
        """Whether to fetch: no keys yet, the cache expired, or an unseen kid long enough after a fetch."""
        if now < self._retry_at:
            return False
        if self._fetched_at is None:
            return True
        age = now - self._fetched_at
        return age >= self._cache_s or (self._lookup(kid) is None and age >= JWKS_REFETCH_S)

    def _refresh(self, kid: str | None) -> None:
        if not self._due(kid, self._monotonic()):
            return
        # A request that has its key goes on with it while another fetches; the others wait for it.
        if not self._fetching.acquire(blocking=self._lookup(kid) is None):
            return
        try:
            now = self._monotonic()
            if self._due(kid, now):  # unless the fetch just waited for did it
                self._fetch(now)
        finally:
            self._fetching.release()

    def _fetch(self, now: float) -> None:
        assert self._url is not None
        self.fetches += 1
        try:
            response = httpx.get(self._url, timeout=5, follow_redirects=False)
            response.raise_for_status()
            self._keys = _parse_keys(response.content, self._url)
        except (httpx.HTTPError, ValueError):
            self._retry_at = now + JWKS_RETRY_S  # keep the keys we have
            return
        self._fetched_at = now


def _parse_keys(document: bytes, where: str) -> dict[str | None, SigningKey]:
    """Keys of a JWKS document or a PEM public key, by key id (None: a PEM key)."""
    if document.lstrip().startswith(b"-----BEGIN"):
        key = load_pem_public_key(document)
        if not isinstance(key, RSAPublicKey | EllipticCurvePublicKey | Ed25519PublicKey | Ed448PublicKey):
            raise ValueError(f"{where}: a {type(key).__name__} cannot check signatures of tokens")
        return {None: key}
    try:
        keys = jwt.PyJWKSet.from_dict(json.loads(document)).keys
    except (ValueError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
        raise ValueError(f"{where}: not a JWKS document or a PEM public key: {exc}") from None
    usable: dict[str | None, SigningKey] = {
        key.key_id: key for key in keys if key.algorithm_name in ALGORITHMS
    }
    if not usable:
        raise ValueError(f"{where}: no signing key with an algorithm of {', '.join(ALGORITHMS)}")
    return usable


def _algorithms(key: SigningKey) -> list[str]:
    """What ``key`` can check: a JWK its own algorithm, a PEM key those of its kind."""
    if isinstance(key, jwt.PyJWK):
        return [key.algorithm_name]
    if isinstance(key, RSAPublicKey):
        return [alg for alg in ALGORITHMS if alg[:2] in ("RS", "PS")]
    if isinstance(key, EllipticCurvePublicKey):
        return [alg for alg in ALGORITHMS if alg.startswith("ES")]
    return ["EdDSA"]


def _claim(claims: dict[str, Any], path: str) -> object:
    value: object = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _strings(value: object) -> list[str]:
    """A claim as strings: a list of them, or one string of items separated by spaces or commas."""
    if isinstance(value, str):
        return [item for item in re.split(r"[\s,]+", value) if item]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


class OidcVerifier:
    """Checks a sign-on token and makes the caller's Principal out of its claims."""

    def __init__(self, settings: ApiSettings, keys: IssuerKeys | None = None) -> None:
        assert settings.oidc_issuer is not None, "OidcVerifier needs oidc_issuer"
        assert settings.oidc_audience is not None, "OidcVerifier needs oidc_audience"
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.role_claim = settings.oidc_role_claim
        self.sites_claim = settings.oidc_sites_claim
        self.leeway_s = settings.oidc_leeway_s
        self.keys = keys or IssuerKeys(
            jwks_url=settings.oidc_jwks_url,
            jwks_file=settings.oidc_jwks_file,
            cache_s=settings.oidc_jwks_cache_s,
        )

    def principal(self, token: str, now_ms: int) -> Principal:
        """The caller, or TokenRefused naming what is wrong; a token without a CityGW role is PUBLIC."""
        if not looks_like_jwt(token):
            raise TokenRefused("neither a CityGW API key (cgw_<id>.<secret>) nor a sign-on JWT")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenRefused("not a well-formed JWT") from None
        kid = header.get("kid")
        key = self.keys.key(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=_algorithms(key),
                audience=self.audience,
                issuer=self.issuer,
                # Expiry is checked below against the app's clock, like the API keys' expiry.
                options={
                    "require": ["exp", "iss", "aud", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            raise TokenRefused("the token is not meant for this API (audience)") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("the token was not issued by the configured sign-on (issuer)") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise TokenRefused(f"the token is not valid: {exc}") from None
        now_s = now_ms / 1000
        exp, nbf = claims["exp"], claims.get("nbf")
        if not isinstance(exp, int | float) or exp + self.leeway_s <= now_s:
            raise TokenRefused("the token has expired")
        if nbf is not None and (not isinstance(nbf, int | float) or nbf - self.leeway_s > now_s):
            raise TokenRefused("the token is not valid yet")
        actor = f"oidc:{str(claims['sub'])[:_MAX_ACTOR]}"
        named = set(_strings(_claim(claims, self.role_claim)))
        role = next((r for r in _ROLES_BY_RANK if r.value in named), Role.PUBLIC)
        sites = (
            frozenset(_strings(_claim(claims, self.sites_claim))) if role is Role.ENGINEER else frozenset()
        )
        return Principal(role, actor, sites)
