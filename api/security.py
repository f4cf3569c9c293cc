"""Who is calling: roles, bearer API keys (stored as SHA-256 hashes) and the dependencies that check them.

Roles: ``public`` (no key: transit feeds, open data), ``utility`` (telemetry, exports),
``engineer`` (registry, config, commands at the sites granted to the key), ``transit`` (the
city-wide static GTFS and operator alerts: no site limits them, so no site key may), ``admin``
(keys, audit log, everything). A key is ``cgw_<id>.<secret>``; ``<id>`` finds the row, the secret is checked
against its hash in constant time. The secret is 256 random bits, so a plain SHA-256 of it is as
hard to reverse as the secret is to guess: a slow password hash would only make every request with a
wrong key cost the server tens of milliseconds of CPU. Keys made before kept a salted scrypt hash; it
still verifies and is replaced by the SHA-256 the first time the key is used. Keys are made with
``citygw keys create``. With a
single sign-on configured (``CITYGW_OIDC_*``), a bearer token that looks like a JWT is checked by
``api.oidc`` instead; its role and sites come from the token's claims.

How a route uses it::

    from api.security import AdminDep, EngineerDep, Role, require_role

    @router.post("/alerts")
    def create_alert(principal: EngineerDep, ...) -> ...:   # engineers and admins
        ...  # principal.actor names the caller for the audit log

    @router.delete("/x", dependencies=[Depends(require_role(Role.UTILITY, Role.ENGINEER))])
    def ...

``require_role(*roles)`` lets those roles and ``admin`` through; no key answers 401 with
``WWW-Authenticate: Bearer``, a valid key or token of another role (or of none) 403. Site checks for
engineers: ``principal.may_manage(site)`` or ``ensure_site(principal, site)`` (403 otherwise).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from threading import Lock
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from api.registry.models import ApiKey

if TYPE_CHECKING:
    from api.deps import AppContext
    from api.oidc import OidcVerifier

log = logging.getLogger(__name__)
TOKEN_PREFIX = "cgw_"
KEY_ID_PATTERN = r"^[0-9a-f]{12}$"
_TOKEN_RE = re.compile(r"^cgw_([0-9a-f]{12})\.([A-Za-z0-9_-]{20,128})$")
HASH_SCHEME = "sha256"
LEGACY_SCHEME = "scrypt"  # keys made before: about 16 MiB and tens of milliseconds per check


class Role(StrEnum):
    PUBLIC = "public"
    UTILITY = "utility"
    ENGINEER = "engineer"
    TRANSIT = "transit"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: a role, a name for the audit log and (engineers) granted sites."""

    role: Role
    actor: str
    sites: frozenset[str] = field(default_factory=frozenset)
    key_id: str | None = None

    def may_manage(self, site: str) -> bool:
        """Admins manage every site, engineers the sites granted to them, nobody else any."""
        return self.role is Role.ADMIN or (self.role is Role.ENGINEER and site in self.sites)


ANONYMOUS = Principal(Role.PUBLIC, "anonymous")


class TokenRefused(Exception):
    """A bearer token that is not accepted: ``status`` 401, or 503 when it cannot be checked now
    (then ``retry_after_s`` says when to try again)."""

    def __init__(self, message: str, *, status: int = 401, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    """``sha256$digest``: fit for a high-entropy random secret (not for a password)."""
    return f"{HASH_SCHEME}${_b64(hashlib.sha256(secret.encode()).digest())}"


def is_legacy_hash(stored: str) -> bool:
    """Whether ``stored`` is a slow scrypt hash of a key made before, ``scrypt$N$r$p$salt$digest``."""
    return stored.startswith(f"{LEGACY_SCHEME}$")


def verify_secret(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored``, of either scheme (constant-time comparison of the digests)."""
    scheme, _, rest = stored.partition("$")
    try:
        if scheme == HASH_SCHEME:
            expected, actual = _unb64(rest), hashlib.sha256(secret.encode()).digest()
        elif scheme == LEGACY_SCHEME:
            n, r, p, salt, digest = rest.split("$")
            expected = _unb64(digest)
            actual = hashlib.scrypt(
                secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
            )
        else:
            return False
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def format_api_key(key_id: str, secret: str) -> str:
    return f"{TOKEN_PREFIX}{key_id}.{secret}"


def parse_api_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    match = _TOKEN_RE.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


class VerifiedKeys:
    """Checks a key's secret; remembers tokens whose (slow) legacy scrypt check passed, by key id.

    A legacy key's hash is upgraded on first use, so this matters only while that cannot be
    written: such a key still costs one scrypt per process. Only a SHA-256 of the token is kept;
    revocation and expiry are still read from the registry on every request.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._digests: OrderedDict[str, bytes] = OrderedDict()
        self._lock = Lock()

    def check(self, key_id: str, secret: str, stored_hash: str) -> bool:
        if not is_legacy_hash(stored_hash):
            return verify_secret(secret, stored_hash)
        digest = hashlib.sha256(f"{key_id}.{secret}.{stored_hash}".encode()).digest()
        with self._lock:
            known = self._digests.get(key_id)
        if known is not None and hmac.compare_digest(known, digest):
            return True
        if not verify_secret(secret, stored_hash):
            return False
        with self._lock:
            self._digests[key_id] = digest
            self._digests.move_to_end(key_id)
            while len(self._digests) > self._size:
                self._digests.popitem(last=False)
        return True


_bearer = HTTPBearer(
    auto_error=False,
    description="an API key, `cgw_<id>.<secret>` (citygw keys create), or the city's sign-on JWT (if set up)",
)


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def _context(request: Request) -> AppContext:
    # Not api.deps.ContextDep: deps imports this module for VerifiedKeys.
    context: AppContext = request.app.state.context
    return context


def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller: ANONYMOUS without a key, the key's principal with a valid one, 401 with a bad one."""
    principal = _principal(request, credentials)
    request.state.principal = principal  # who was refused, for api.refusals
    return principal


def _principal(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    if credentials is None:
        return ANONYMOUS
    context = _context(request)
    token = credentials.credentials
    oidc: OidcVerifier | None = getattr(request.app.state, "oidc", None)
    if oidc is not None and not token.startswith(TOKEN_PREFIX):
        return _sign_on_principal(oidc, token, context.clock())
    parsed = parse_api_key(token)
    if parsed is None:
        raise _unauthorized("not a CityGW API key; expected Authorization: Bearer cgw_<id>.<secret>")
    key_id, secret = parsed
    request.state.claimed_key = key_id  # ids are not secret; names the key a 401 refused
    with context.registry.session() as session:
        key = session.get(ApiKey, key_id)
    # An unknown id costs no hash at all: ids are not secret (listings and the audit log show them).
    if key is None or not context.verified_keys.check(key_id, secret, key.secret_hash):
        raise _unauthorized("unknown or wrong API key")
    if is_legacy_hash(key.secret_hash):
        _upgrade_hash(context, key, secret)
    now_ms = context.clock()
    if key.revoked_at is not None:
        raise _unauthorized("this API key was revoked")
    if key.expires_at is not None and key.expires_at <= now_ms:
        raise _unauthorized("this API key has expired")
    try:
        role = Role(key.role)
    except ValueError:
        raise _unauthorized("this API key has an unknown role") from None
    return Principal(role, f"key:{key.id} ({key.name})", frozenset(key.sites), key.id)


def _upgrade_hash(context: AppContext, key: ApiKey, secret: str) -> None:
    """Replace a key's verified legacy scrypt hash by the fast one (a failure only logs: next time)."""
    try:
        with context.registry.session() as session:
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == key.id, ApiKey.secret_hash == key.secret_hash)
                .values(secret_hash=hash_secret(secret))
            )
            session.commit()
    except SQLAlchemyError as exc:  # not the statement: its parameters hold the hashes
        reason = getattr(exc, "orig", None) or type(exc).__name__
        log.warning("API key %s keeps its scrypt hash for now: %s", key.id, reason)


def _sign_on_principal(oidc: OidcVerifier, token: str, now_ms: int) -> Principal:
    try:
        return oidc.principal(token, now_ms)
    except TokenRefused as exc:
        if exc.status == status.HTTP_401_UNAUTHORIZED:
            raise _unauthorized(str(exc)) from None
        headers = {"Retry-After": f"{exc.retry_after_s:.0f}"} if exc.retry_after_s is not None else None
        raise HTTPException(exc.status, str(exc), headers=headers) from None


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_role(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency letting ``roles`` and admins through: 401 without a key, 403 with another role."""
    allowed = frozenset(roles) | {Role.ADMIN}
    names = ", ".join(sorted(role.value for role in allowed))

    def dependency(principal: PrincipalDep) -> Principal:
        if principal.role in allowed:
            return principal
        if principal == ANONYMOUS:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                f"an API key is needed (role {names})",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if principal.role is Role.PUBLIC:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"{principal.actor} has no CityGW role; needs {names}"
            )
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"role {principal.role.value} may not; needs {names}")

    return dependency


def ensure_site(principal: Principal, site: str) -> None:
    """403 unless ``principal`` may manage ``site``."""
    if not principal.may_manage(site):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"site {site!r} is not granted to {principal.actor}")


UtilityDep = Annotated[Principal, Depends(require_role(Role.UTILITY, Role.ENGINEER))]
"""Telemetry readers: utilities, engineers, admins."""
EngineerDep = Annotated[Principal, Depends(require_role(Role.ENGINEER))]
"""Field engineers and admins; check the site with ``ensure_site``."""
AdminDep = Annotated[Principal, Depends(require_role(Role.ADMIN))]
TransitOperatorDep = Annotated[Principal, Depends(require_role(Role.TRANSIT))]
"""City-wide transit writes (static GTFS, operator alerts): the transit role and admins, never a site key."""


def telemetry_reader(request: Request, principal: PrincipalDep) -> Principal:
    """Telemetry reads: utilities and up, or anybody when ``CITYGW_OPEN_TELEMETRY`` is set."""
    if _context(request).settings.open_telemetry:
        return principal
    return require_role(Role.UTILITY, Role.ENGINEER)(principal)


TelemetryReaderDep = Annotated[Principal, Depends(telemetry_reader)]
