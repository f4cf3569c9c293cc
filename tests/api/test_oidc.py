"""Sign-on tokens: JWTs signed by keys made here, the issuer's JWKS served by a loopback HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from fastapi.testclient import TestClient
from sqlalchemy import select

from api import create_app
from api.oidc import JWKS_RETRY_S, IssuerKeys, OidcVerifier
from api.registry import Registry
from api.registry.models import AuditEntry
from api.security import Role, TokenRefused
from api.settings import ApiSettings, SettingsError, load_settings
from collector.store.sqlite import SqliteStore
from tests.api.factories import ENGINEER_SITE, NOW_MS, FakeClock, bearer

ISSUER = "https://sso.lviv.example/realms/city"
AUDIENCE = "citygw-api"
NOW_S = NOW_MS // 1000
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
STRANGER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    public: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, "alg": alg, "use": "sig"}


class Jwks:
    """The identity provider's key endpoint on loopback, counting fetches; ``keys`` can be rotated.

    ``down``: it answers 503; ``stall`` (while not set): it answers only once the event is set.
    """

    def __init__(self) -> None:
        self.keys = [jwk(RSA_KEY, "rsa-1", "RS256"), jwk(EC_KEY, "ec-1", "ES256")]
        self.fetches = 0
        self.down = False
        self.stall = threading.Event()
        self.stall.set()
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                jwks.fetches += 1
                jwks.stall.wait(10)
                if jwks.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.05,), name="jwks", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def token(
    *,
    key: Any = RSA_KEY,
    kid: str | None = "rsa-1",
    alg: str = "RS256",
    exp_in_s: int = 300,
    **claims: Any,
) -> str:
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "olena", "exp": NOW_S + exp_in_s, "iat": NOW_S, **claims}
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg, headers=headers)


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    server = Jwks()
    yield server
    server.close()


@pytest.fixture
def sso_settings(settings: ApiSettings, jwks: Jwks) -> ApiSettings:
    return settings.model_copy(
        update={"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_url": jwks.url}
    )


@pytest.fixture
def sso(store: SqliteStore, sso_settings: ApiSettings, registry: Registry) -> Iterator[TestClient]:
    app = create_app(store, settings=sso_settings, clock=FakeClock(), registry=registry)
    with TestClient(app) as client:
        yield client


ENGINEER = {"citygw_role": "engineer", "citygw_sites": [ENGINEER_SITE]}


CASES = [
    ("utility reads telemetry", token(citygw_role="utility"), "/v1/summary", 200),
    ("utility may not list agents", token(citygw_role="utility"), "/v1/agents", 403),
    ("engineer lists agents", token(**ENGINEER), "/v1/agents", 200),
    ("engineer may not list keys", token(**ENGINEER), "/v1/keys", 403),
    ("admin lists keys", token(citygw_role="admin"), "/v1/keys", 200),
    ("EC key", token(key=EC_KEY, kid="ec-1", alg="ES256", citygw_role="utility"), "/v1/summary", 200),
    ("a list of roles: the highest", token(citygw_role=["utility", "admin"]), "/v1/audit", 200),
    ("no role claim: signed in, no role", token(), "/v1/summary", 403),
    ("an unknown role", token(citygw_role="superuser"), "/v1/summary", 403),
    ("no role is still public", token(), "/v1/open-data", 200),
    ("expired", token(exp_in_s=-60, citygw_role="admin"), "/v1/keys", 401),
    ("within the leeway", token(exp_in_s=-10, citygw_role="admin"), "/v1/keys", 200),
    ("not valid yet", token(nbf=NOW_S + 600, citygw_role="admin"), "/v1/keys", 401),
    ("no expiry", token(exp_in_s=0, exp=None, citygw_role="admin"), "/v1/keys", 401),
    ("wrong issuer", token(iss="https://evil.example", citygw_role="admin"), "/v1/keys", 401),
    ("wrong audience", token(aud="another-api", citygw_role="admin"), "/v1/keys", 401),
    ("wrong signature", token(key=STRANGER_KEY, citygw_role="admin"), "/v1/keys", 401),
    ("unknown kid", token(key=STRANGER_KEY, kid="rsa-9", citygw_role="admin"), "/v1/keys", 401),
    ("EC alg on the RSA key", token(key=EC_KEY, alg="ES256", citygw_role="admin"), "/v1/keys", 401),
    ("not a JWT", "eyJhbGciOiJub25lIn0.e30", "/v1/keys", 401),
    ("alg none", token(key=None, alg="none", citygw_role="admin"), "/v1/keys", 401),
]


@pytest.mark.parametrize(("what", "jwt_token", "path", "expected"), CASES, ids=[case[0] for case in CASES])
def test_sign_on_tokens(sso: TestClient, what: str, jwt_token: str, path: str, expected: int) -> None:
    response = sso.get(path, headers=bearer(jwt_token))
    assert response.status_code == expected, response.text
    if expected == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("role", "expected"), [("transit", 422), (["utility", "transit"], 422), ("engineer", 403)]
)
def test_a_transit_token_may_replace_the_gtfs(sso: TestClient, role: str | list[str], expected: int) -> None:
    claims = {"citygw_role": role, "citygw_sites": [ENGINEER_SITE]}
    response = sso.put("/v1/transit/gtfs.zip", content=b"not a zip", headers=bearer(token(**claims)))
    assert response.status_code == expected, response.text  # 422: let in, the zip refused


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_a_public_key_used_as_an_hmac_secret_is_refused(sso: TestClient) -> None:
    # PyJWT will not sign with a PEM as an HMAC secret: forge the token by hand.
    pem = RSA_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    head = b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": NOW_S + 60, "citygw_role": "admin"}
    body = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    assert sso.get("/v1/keys", headers=bearer(f"{head}.{body}.{signature}")).status_code == 401


def test_api_keys_work_alongside_and_writes_name_the_signed_in_user(
    sso: TestClient, keys: dict[Role, str], registry: Registry
) -> None:
    assert sso.get("/v1/summary", headers=bearer(keys[Role.UTILITY])).status_code == 200
    assert (
        sso.get("/v1/summary", headers=bearer("cgw_0123456789ab.not-a-real-secret-at-all")).status_code == 401
    )
    admin = bearer(token(sub="olena.k@lviv.example", citygw_role="admin"))
    created = sso.post("/v1/keys", json={"name": "meter reader", "role": "utility"}, headers=admin)
    assert created.status_code == 201, created.text
    with registry.session() as session:
        actors = list(session.scalars(select(AuditEntry.actor).where(AuditEntry.action == "key.create")))
    assert actors[-1] == "oidc:olena.k@lviv.example"


def test_an_engineer_manages_only_the_sites_in_the_token(sso: TestClient) -> None:
    agent = {"id": "depot-9", "site": ENGINEER_SITE, "lines": []}
    granted = bearer(token(**ENGINEER))
    assert sso.post("/v1/agents", json=agent, headers=granted).status_code == 201
    other = bearer(token(citygw_role="engineer", citygw_sites="sykhiv, rynok"))
    assert sso.post("/v1/agents", json={**agent, "id": "depot-8"}, headers=other).status_code == 403


def test_nested_role_claims(sso_settings: ApiSettings) -> None:
    nested = sso_settings.model_copy(update={"oidc_role_claim": "realm_access.roles"})
    verifier = OidcVerifier(nested)
    principal = verifier.principal(token(realm_access={"roles": ["offline_access", "utility"]}), NOW_MS)
    assert (principal.role, principal.actor) == (Role.UTILITY, "oidc:olena")


def test_the_jwks_is_cached_and_fetched_again_for_a_new_key(sso_settings: ApiSettings, jwks: Jwks) -> None:
    now = [0.0]
    keys = IssuerKeys(jwks_url=jwks.url, jwks_file=None, cache_s=600, monotonic=lambda: now[0])
    verifier = OidcVerifier(sso_settings, keys)
    for _ in range(5):
        verifier.principal(token(citygw_role="utility"), NOW_MS)
    assert jwks.fetches == 1
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.keys = [*jwks.keys, jwk(rotated, "rsa-2", "RS256")]
    fresh = token(key=rotated, kid="rsa-2", citygw_role="utility")
    with pytest.raises(TokenRefused, match="rsa-2"):
        verifier.principal(fresh, NOW_MS)  # a new kid soon after a fetch: no fetch (no hammering)
    assert jwks.fetches == 1
    now[0] = 31
    assert verifier.principal(fresh, NOW_MS).role is Role.UTILITY
    assert jwks.fetches == 2
    now[0] = 700  # the cache expired, the provider is down: the keys we have still serve
    jwks.close()
    assert verifier.principal(fresh, NOW_MS).role is Role.UTILITY


def test_a_failed_first_fetch_is_503_and_the_issuer_back_serves_within_seconds(
    sso_settings: ApiSettings, jwks: Jwks
) -> None:
    now = [0.0]
    keys = IssuerKeys(jwks_url=jwks.url, jwks_file=None, cache_s=600, monotonic=lambda: now[0])
    verifier = OidcVerifier(sso_settings, keys)
    valid = token(citygw_role="utility")
    jwks.down = True
    for now[0] in (0.0, 1.0):  # the fetch fails; a second later it is not tried again, still no keys
        with pytest.raises(TokenRefused) as refused:
            verifier.principal(valid, NOW_MS)
        assert refused.value.status == 503, refused.value
    assert jwks.fetches == 1
    jwks.down = False
    now[0] = JWKS_RETRY_S  # back: not 30 s later
    assert verifier.principal(valid, NOW_MS).role is Role.UTILITY
    assert jwks.fetches == 2


def test_a_token_whose_key_is_in_hand_does_not_wait_for_a_fetch(
    sso_settings: ApiSettings, jwks: Jwks
) -> None:
    now = [0.0]
    keys = IssuerKeys(jwks_url=jwks.url, jwks_file=None, cache_s=600, monotonic=lambda: now[0])
    verifier = OidcVerifier(sso_settings, keys)
    valid = token(citygw_role="utility")
    verifier.principal(valid, NOW_MS)
    jwks.stall.clear()  # the provider hangs
    now[0] = 700  # the cache expired: the next request fetches
    fetching = threading.Thread(target=verifier.principal, args=(valid, NOW_MS))
    fetching.start()
    deadline = time.monotonic() + 5
    while jwks.fetches < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert jwks.fetches == 2
        assert verifier.principal(valid, NOW_MS).role is Role.UTILITY
        assert fetching.is_alive()  # answered while the fetch still hangs
    finally:
        jwks.stall.set()
        fetching.join()
    assert jwks.fetches == 2


def test_no_keys_yet_and_the_provider_down_is_503(
    store: SqliteStore, sso_settings: ApiSettings, jwks: Jwks, registry: Registry
) -> None:
    jwks.close()
    app = create_app(store, settings=sso_settings, clock=FakeClock(), registry=registry)
    with TestClient(app) as client:
        response = client.get("/v1/summary", headers=bearer(token(citygw_role="utility")))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"  # when the issuer's keys are fetched again


def test_keys_from_a_pem_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pem = tmp_path / "sso.pem"
    pem.write_bytes(EC_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    for name, value in {"ISSUER": ISSUER, "AUDIENCE": AUDIENCE, "JWKS_FILE": str(pem)}.items():
        monkeypatch.setenv(f"CITYGW_OIDC_{name}", value)
    verifier = OidcVerifier(load_settings())
    signed = token(key=EC_KEY, kid=None, alg="ES256", citygw_role="engineer", citygw_sites=["a", "b"])
    principal = verifier.principal(signed, NOW_MS)
    assert (principal.role, principal.sites) == (Role.ENGINEER, frozenset({"a", "b"}))
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(TokenRefused, match="signature"):
        verifier.principal(token(key=stranger, kid=None, alg="ES256", citygw_role="admin"), NOW_MS)
    with pytest.raises(TokenRefused, match="not valid"):
        verifier.principal(token(key=STRANGER_KEY, kid=None, citygw_role="admin"), NOW_MS)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"oidc_issuer": ISSUER}, "CITYGW_OIDC_AUDIENCE"),
        ({"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE}, "exactly one of"),
        (
            {"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_file": "/nonexistent.pem"},
            "readable",
        ),
        ({"oidc_jwks_url": "file:///etc/passwd"}, "not an http"),
    ],
)
def test_incomplete_sign_on_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(**overrides)
