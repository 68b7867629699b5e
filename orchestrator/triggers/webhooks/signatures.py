"""Webhook signatures, pure: verify inbound deliveries and sign outbound ones.

- GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>`.
- Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp` (unix seconds),
  `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>` (space-separated
  list; any match passes; other schemes such as `v1a,` are skipped). Svix, the spec's origin,
  sends the same under `svix-id`, `svix-timestamp`, `svix-signature`: those are read where the
  `webhook-*` ones are absent, as the spec allows. The secret is `whsec_<base64 key>` (padding
  optional; a bare secret is used as is). A timestamp outside the tolerance window is refused,
  which stops replays of old deliveries.
- Bearer: `Authorization: Bearer <token>`.
Comparisons are constant-time. Errors say what is wrong, never echo a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

TOLERANCE_S = 300


class SignatureError(Exception):
    """The delivery is not authentic: missing, malformed or wrong signature, or a replay."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def verify_github(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    given = _header(headers, "x-hub-signature-256")
    if not given:
        raise SignatureError("missing X-Hub-Signature-256 header")
    if not given.startswith("sha256="):
        raise SignatureError("X-Hub-Signature-256 must look like sha256=<hex>")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given[len("sha256=") :], expected):
        raise SignatureError("X-Hub-Signature-256 does not match the body")


def _standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        encoded = secret[len("whsec_") :]
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except ValueError as exc:
            raise SignatureError("the configured whsec_ secret is not valid base64") from exc
    return secret.encode()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_standard(
    headers: Mapping[str, str], body: bytes, secret: str, now: float, tolerance_s: int = TOLERANCE_S
) -> str:
    """Check a Standard Webhooks delivery; returns its `webhook-id`."""
    msg_id, timestamp, signatures = _standard_headers(headers)
    if not (msg_id and timestamp and signatures):
        raise SignatureError(
            "missing webhook-id, webhook-timestamp or webhook-signature header "
            "(or their Svix names svix-id, svix-timestamp, svix-signature)"
        )
    try:
        sent = int(timestamp)
    except ValueError:
        raise SignatureError("webhook-timestamp must be unix seconds") from None
    if abs(now - sent) > tolerance_s:
        raise SignatureError(
            f"webhook-timestamp is {int(now - sent)}s away from now (tolerance {tolerance_s}s): "
            "a replay or a badly set clock"
        )
    expected = standard_signature(secret, msg_id, sent, body)
    for candidate in signatures.split():
        if hmac.compare_digest(candidate, expected):
            return msg_id
    raise SignatureError("no webhook-signature matches the body")


def _standard_headers(headers: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """(id, timestamp, signatures) under the Standard Webhooks names, else under Svix's — one
    set or the other, never mixed, so a delivery is checked as its sender signed it."""
    standard = tuple(_header(headers, f"webhook-{n}") for n in ("id", "timestamp", "signature"))
    if any(standard):
        return standard[0], standard[1], standard[2]
    svix = tuple(_header(headers, f"svix-{n}") for n in ("id", "timestamp", "signature"))
    return svix[0], svix[1], svix[2]


def verify_bearer(headers: Mapping[str, str], token: str) -> None:
    given = _header(headers, "authorization")
    if not given or not given.lower().startswith("bearer "):
        raise SignatureError("missing Authorization: Bearer <token> header")
    if not hmac.compare_digest(given[len("bearer ") :].strip(), token):
        raise SignatureError("the bearer token is not valid")
