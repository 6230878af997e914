"""JWT authentication for WebSocket connects (ARCHITECTURE §5).

`TokenVerifier.verify` turns a bearer token into a `UserContext` or raises `AuthError`
(`TokenExpired` for an expired one). It runs once per connection, so everything that does not
depend on the token — the signature checker, the prepared secret, the parsed public key, the
algorithm → key map — is built once in the constructor.

Accepted algorithms come from an allow-list: HS256 is verified with the shared secret, RS256 and
ES256 (P-256) with the configured PEM public key. Each algorithm is bound to exactly one key, so
an HS256 token can never be checked against the public key text (algorithm confusion), and
`alg: none` or anything outside the list is refused.

Claims: `sub` (userId, UUID) and `companyId` (UUID) are required, as is `exp`; `roles` (list of
strings), `vehicleIds` and `groupIds` (lists of UUIDs) and `platform` (web/mobile/desktop,
default web) are optional. An absent or null `vehicleIds`/`groupIds` means "no narrowing"; an
empty list narrows to nothing. UUIDs are returned as canonical lower-case strings.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jwt
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm

from tracker_ws.domain.errors import AuthError, ConfigError, TokenExpired
from tracker_ws.domain.models import UserContext
from tracker_ws.domain.validate import is_uuid

if TYPE_CHECKING:
    from tracker_ws.config import Settings

log = logging.getLogger(__name__)

LEEWAY_S = 5.0  # tolerated clock skew between the token issuer and this service
PLATFORMS = frozenset({"web", "mobile", "desktop"})
DEFAULT_PLATFORM = "web"
HMAC_ALGORITHMS = frozenset({"HS256"})
RSA_ALGORITHMS = frozenset({"RS256"})
EC_ALGORITHMS = frozenset({"ES256"})
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | RSA_ALGORITHMS | EC_ALGORITHMS
MIN_RSA_BITS = 2048
MIN_HMAC_SECRET_BYTES = 32  # RFC 7518 §3.2: at least the hash size
# Tokens arrive in URLs and headers, which aiohttp caps at 8190 bytes by default; PyJWT checks
# base64 character by character in Python, so refuse oversized input before it gets there.
MAX_TOKEN_CHARS = 8192
# JWS compact form (PyJWT tolerates '=' padding). A C-speed pre-check that turns away junk.
_JWS_RE = re.compile(r"[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*")


_PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_VerifyKey = bytes | _PublicKey


class _PreparedHMAC(HMACAlgorithm):
    """HS256 whose key was prepared once: PyJWT prepares the key on every verify (encodes it
    and searches it for PEM and SSH markers, about a sixth of a verify). Registered on our
    own PyJWS through its public `register_algorithm`; any other key object is prepared as
    PyJWT would."""

    def __init__(self, prepared: bytes) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._prepared = prepared

    def prepare_key(self, key: Any) -> bytes:
        if key is self._prepared:
            return key
        return super().prepare_key(key)


class TokenVerifier:
    """Verifies bearer tokens against an algorithm allow-list. Thread- and task-safe (immutable)."""

    __slots__ = ("_decoder", "_keys", "_leeway_s", "_single")

    def __init__(
        self,
        secret: str | None,
        public_key: str | None,
        algorithms: Sequence[str],
        *,
        leeway_s: float = LEEWAY_S,
    ) -> None:
        allowed = tuple(dict.fromkeys(algorithms))  # de-duplicated, order kept
        if not allowed:
            raise ConfigError("at least one JWT algorithm must be allowed")
        unsupported = [a for a in allowed if a not in SUPPORTED_ALGORITHMS]
        if unsupported:
            raise ConfigError(
                f"unsupported JWT algorithm(s) {unsupported}; "
                f"supported: {sorted(SUPPORTED_ALGORITHMS)}"
            )
        # Signatures only (PyJWS); the claims are read and checked in verify(), time claims
        # with its own clock (PyJWT has none to inject). No audience is configured, so `aud`
        # is not enforced.
        self._decoder = jwt.PyJWS(options={"verify_signature": True})
        keys: dict[str, _VerifyKey] = {}
        for alg in allowed:
            if alg in HMAC_ALGORITHMS:
                if not secret:
                    raise ConfigError(f"{alg} is allowed but no JWT secret is configured")
                prepared = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
                self._decoder.unregister_algorithm(alg)
                self._decoder.register_algorithm(alg, _PreparedHMAC(prepared))
                keys[alg] = prepared
                if len(secret.encode()) < MIN_HMAC_SECRET_BYTES:
                    # PyJWT also warns (InsecureKeyLengthWarning) on each use; say it once, loudly.
                    log.warning(
                        "JWT secret is shorter than %d bytes: fine for development, weak for %s",
                        MIN_HMAC_SECRET_BYTES,
                        alg,
                    )
        asymmetric = [a for a in allowed if a not in HMAC_ALGORITHMS]
        if asymmetric:
            if not public_key:
                raise ConfigError(f"{asymmetric} allowed but no JWT public key is configured")
            loaded = _load_public_key(public_key)
            for alg in asymmetric:
                # One PEM is either RSA or EC: keep only the algorithms that key can verify
                # (Settings.from_env allows both RS256 and ES256 whenever a key is set).
                if _key_fits(alg, loaded):
                    keys[alg] = loaded
            if not any(a in keys for a in asymmetric):
                raise ConfigError(
                    f"the JWT public key ({_describe_key(loaded)}) cannot verify {asymmetric}"
                )
        self._keys: dict[str, _VerifyKey] = keys
        self._leeway_s = leeway_s
        # Usual case: one key for every allowed algorithm, so the header needs no extra parse;
        # PyJWT itself refuses an `alg` outside the list.
        distinct = {id(k) for k in keys.values()}
        self._single: tuple[_VerifyKey, list[str]] | None = (
            (next(iter(keys.values())), list(keys)) if len(distinct) == 1 else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        return cls(settings.jwt_secret, settings.jwt_public_key, settings.jwt_algorithms)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms actually accepted (allow-list narrowed to what the keys can verify)."""
        return tuple(self._keys)

    def verify(self, token: str, *, now: float | None = None) -> UserContext:
        """Verify `token` and return its claims. `now` is epoch seconds (default: the clock)."""
        if not token:
            raise AuthError("missing token")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("token is too long")
        if not _JWS_RE.fullmatch(token):
            raise AuthError("malformed token: not a compact JWS (header.payload.signature)")
        claims = self._decode(token)
        if now is None:
            now = time.time()

        exp = claims.get("exp")
        if exp is None:
            raise AuthError("token has no exp claim")
        if not _is_number(exp):
            raise AuthError("exp claim must be a number (epoch seconds)")
        if exp <= now - self._leeway_s:
            raise TokenExpired("token has expired")
        nbf = claims.get("nbf")
        if nbf is not None:
            if not _is_number(nbf):
                raise AuthError("nbf claim must be a number (epoch seconds)")
            if nbf > now + self._leeway_s:
                raise AuthError("token is not valid yet (nbf)")
        iat = claims.get("iat")
        if iat is not None and not _is_number(iat):
            raise AuthError("iat claim must be a number (epoch seconds)")

        platform = claims.get("platform")
        if platform is None:
            platform = DEFAULT_PLATFORM
        elif not isinstance(platform, str) or platform.lower() not in PLATFORMS:
            raise AuthError(f"platform claim must be one of {sorted(PLATFORMS)}")
        else:
            platform = platform.lower()

        return UserContext(
            user_id=_uuid(claims.get("sub"), "sub"),
            company_id=_uuid(claims.get("companyId"), "companyId"),
            roles=_roles(claims.get("roles")),
            vehicle_ids=_uuid_set(claims.get("vehicleIds"), "vehicleIds"),
            group_ids=_uuid_set(claims.get("groupIds"), "groupIds"),
            expires_at=float(exp),
            platform=platform,
        )

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            if self._single is not None:
                key, algorithms = self._single
            else:
                alg = jwt.get_unverified_header(token).get("alg")
                found = self._keys.get(alg) if isinstance(alg, str) else None
                if found is None or not isinstance(alg, str):
                    raise AuthError(f"token algorithm {_short(alg)} is not allowed")
                key, algorithms = found, [alg]
            signed = self._decoder.decode_complete(token, key, algorithms=algorithms)
            try:
                claims = orjson.loads(signed["payload"])
            except orjson.JSONDecodeError:
                # JSON orjson refuses and the standard allows (an integer past 64 bits,
                # 1e400 → inf): read as PyJWT would, so verify() names the bad claim.
                claims = json.loads(signed["payload"])
        except jwt.InvalidAlgorithmError as exc:
            raise AuthError(f"token algorithm {_short(_header_alg(token))} is not allowed") from exc
        except jwt.InvalidSignatureError as exc:
            raise AuthError("token signature is invalid") from exc
        except (jwt.PyJWTError, ValueError) as exc:
            raise AuthError(f"malformed token: {exc}") from exc
        if not isinstance(claims, dict):
            raise AuthError("malformed token: the payload is not a JSON object")
        # What PyJWT's decode checks besides the time claims (which verify() checks with
        # its own clock): a `jti` is a string. No audience, issuer or subject is configured.
        jti = claims.get("jti")
        if jti is not None and not isinstance(jti, str):
            raise AuthError("jti claim must be a string")
        return claims


def extract_token(
    query: Mapping[str, str], headers: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """Find the bearer token of a WebSocket upgrade request.

    Returns `(token, subprotocol)`; `subprotocol` is the `Sec-WebSocket-Protocol` entry the server
    must echo in its handshake response (browsers fail the connection otherwise), or None.
    Sources, first match wins:

    1. query string `?token=<jwt>` (the seed protocol);
    2. `Authorization: Bearer <jwt>` (scheme case-insensitive; non-browser clients);
    3. `Sec-WebSocket-Protocol`, the only header a browser `WebSocket` can set, in either form
       - `bearer, <jwt>`: an entry `bearer` followed by the token as the next entry;
         echo `bearer`;
       - `bearer.<jwt>`: one entry; echo that whole entry.
       Other entries (e.g. an application protocol name) may surround these and are ignored.

    Empty values are skipped. Header names are matched case-insensitively, so a plain dict works
    as well as aiohttp's `CIMultiDictProxy` (which yields the first of repeated headers).
    """
    offered, subprotocol = _from_subprotocol(headers)
    # A browser that offered the bearer subprotocol fails the connection unless it is echoed,
    # even when the token also came another way.
    token = query.get("token")
    if token:
        return token, subprotocol

    authorization = _header(headers, "Authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return value, subprotocol
    return offered, subprotocol


def _from_subprotocol(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    protocols = _header(headers, "Sec-WebSocket-Protocol")
    if protocols:
        entries = [e.strip() for e in protocols.split(",")]
        for i, entry in enumerate(entries):
            lowered = entry.lower()
            if lowered == "bearer":
                if i + 1 < len(entries) and entries[i + 1]:
                    return entries[i + 1], entry
            elif lowered.startswith("bearer.") and len(entry) > len("bearer."):
                return entry[len("bearer.") :], entry
    return None, None


def mint_token(
    user_id: str,
    company_id: str,
    *,
    secret: str,
    roles: Sequence[str] = (),
    vehicle_ids: Sequence[str] | None = None,
    group_ids: Sequence[str] | None = None,
    ttl_s: int = 86400,
    platform: str | None = None,
    algorithm: str = "HS256",
    private_key: str | None = None,
    now: float | None = None,
) -> str:
    """Sign a token with the claims `TokenVerifier` reads (dev CLI and tests).

    HS* algorithms sign with `secret`; RS*/ES* need `private_key` (PEM). Values are written as
    given, unvalidated, so tests can mint malformed claims.
    """
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": user_id,
        "companyId": company_id,
        "roles": list(roles),
        "iat": int(issued),
        "exp": int(issued + ttl_s),
    }
    if vehicle_ids is not None:
        claims["vehicleIds"] = list(vehicle_ids)
    if group_ids is not None:
        claims["groupIds"] = list(group_ids)
    if platform is not None:
        claims["platform"] = platform
    if algorithm.startswith("HS"):
        key = secret
    elif private_key:
        key = private_key
    else:
        raise ValueError(f"{algorithm} needs private_key (PEM)")
    return jwt.encode(claims, key, algorithm=algorithm)


# ---------------------------------------------------------------- helpers


def _load_public_key(pem: str) -> _PublicKey:
    data = pem.strip().encode()
    try:
        if b"CERTIFICATE" in data:
            loaded: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            loaded = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the JWT public key is not a valid PEM public key: {exc}") from exc
    if isinstance(loaded, rsa.RSAPublicKey):
        if loaded.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"the JWT RSA public key has {loaded.key_size} bits; at least {MIN_RSA_BITS} needed"
            )
        return loaded
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        return loaded
    raise ConfigError(f"the JWT public key type {type(loaded).__name__} is not supported")


def _key_fits(alg: str, key: _PublicKey) -> bool:
    if alg in RSA_ALGORITHMS:
        return isinstance(key, rsa.RSAPublicKey)
    # ES256 is ECDSA over P-256 only.
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


def _describe_key(key: _PublicKey) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return f"EC {key.curve.name}"


def _header_alg(token: str) -> object:
    try:
        return jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        return None


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: object) -> bool:
    # bool is an int subclass; `true` is not a timestamp.
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # a JSON integer beyond any float (1 and 400 zeros): not a time
        return False


def _uuid(value: object, claim: str) -> str:
    if value is None:
        raise AuthError(f"token has no {claim} claim")
    if not isinstance(value, str) or not is_uuid(value):
        raise AuthError(f"{claim} claim must be a UUID")
    return value.lower()


def _uuid_set(value: object, claim: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise AuthError(f"{claim} claim must be a list of UUIDs")
    out = set()
    for item in value:
        if not isinstance(item, str) or not is_uuid(item):
            raise AuthError(f"{claim} claim must be a list of UUIDs, got {_short(item)}")
        out.add(item.lower())
    return frozenset(out)


def _roles(value: object) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(r, str) and r for r in value):
        raise AuthError("roles claim must be a list of non-empty strings")
    return frozenset(value)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    lowered = name.lower()
    for key, candidate in headers.items():
        if key.lower() == lowered:
            return candidate
    return None
