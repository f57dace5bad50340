"""Roles, scopes and API keys (after Bluesky httpserver's model, network-and-service.md s.5).

A key is ``qnl_<id>_<secret>``: the id is public (it names the key in the audit log and in
lease conflicts), the secret has 256 bits of entropy and only its SHA-256 is stored, compared
in constant time. A key's scopes are fixed when it is created (from its role) and it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

READ_SCOPES = ("read:status", "read:runs", "read:calibration")
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "observer": READ_SCOPES,
    "operator": (*READ_SCOPES, "write:request", "write:job", "write:calibrate",
                 "write:instrument", "write:lease"),
    "expert": (*READ_SCOPES, "write:request", "write:job", "write:calibrate",
               "write:instrument", "write:lease", "write:hazardous"),
    "admin": (*READ_SCOPES, "write:request", "write:job", "write:calibrate",
              "write:instrument", "write:lease", "write:hazardous", "admin:keys",
              "admin:lease", "read:audit"),
}
"""Each role's scopes. ``write:hazardous`` (heater and fridge set-points, laser power above the
calibrated operating point, interlock overrides) is the expert's; keys and the audit log are
the admin's."""
ANONYMOUS_LOOPBACK = READ_SCOPES
"""What a caller without a key gets on loopback; from anywhere else: nothing (401)."""
ROLES = tuple(ROLE_SCOPES)
MAX_KEY_LIFETIME_S = 366 * 86400.0
TOKEN_RE = re.compile(r"^qnl_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")
DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key (id, name, role, scopes) or the anonymous loopback caller."""

    key_id: str | None
    name: str
    role: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def who(self) -> str:
        """How the audit log and lease conflicts name the caller."""
        return f"{self.name} (key {self.key_id})" if self.key_id else self.name

    def can(self, scope: str) -> bool:
        return scope in self.scopes


def anonymous(loopback: bool) -> Principal | None:
    """The caller without a key: read-only on loopback, nobody otherwise."""
    if not loopback:
        return None
    return Principal(None, "anonymous (loopback)", "anonymous", frozenset(ANONYMOUS_LOOPBACK))


def new_token() -> tuple[str, str, str]:
    """(key id, token to hand out once, SHA-256 of its secret to store)."""
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(10))
    secret = secrets.token_urlsafe(32)
    return key_id, f"qnl_{key_id}_{secret}", digest(secret)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    match = TOKEN_RE.match(token.strip())
    return (match.group(1), match.group(2)) if match else None


def secret_matches(secret: str, stored_digest: str) -> bool:
    """Constant-time comparison of a presented secret with the stored digest."""
    return hmac.compare_digest(digest(secret), stored_digest)


def check_role(role: str) -> str:
    if role not in ROLE_SCOPES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def parse_duration(text: str, what: str = "expires") -> float:
    """Seconds in ``30m``, ``12h``, ``7d``, ``2w``; one-line ValueError otherwise."""
    match = DURATION_RE.match(str(text))
    if not match:
        raise ValueError(f"{what} {text!r} is not a duration; allowed: a number with s, m, h, "
                         "d or w (e.g. 7d)")
    seconds = float(match.group(1)) * DURATION_UNITS[match.group(2)]
    if not 0 < seconds <= MAX_KEY_LIFETIME_S:
        raise ValueError(f"{what} {text!r} is out of range; allowed: more than 0 s and at most "
                         "366 d")
    return seconds
