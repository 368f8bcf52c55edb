"""Client keys: who may use podgate, and which models (``[[keys]]`` in the settings).

With no keys configured podgate is open, as a local tool is. With keys, every ``/v1/``
request must carry one (``Authorization: Bearer <key>``, as the OpenAI SDKs send it) or is
answered 401 in OpenAI's shape; ``/healthz`` and ``/readyz`` stay open for probes.

Only each key's SHA-256 is stored (``podgate hash-key`` prints it); a presented key is
hashed and compared with every stored hash in constant time (``hmac.compare_digest``, all of
them, so the time does not say which one matched). A key limited to some models sees the
others as absent (404 ``model_not_found``, and ``/v1/models`` lists only its own). The
key's ``name`` goes into the log line; the key and its hash never appear anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import sys
from typing import NamedTuple

import msgspec

from adapters.openai_protocol import ErrorDetail, ErrorResponse
from proxy.settings import KeySettings

__all__ = ["ClientKeys", "Refusal", "hash_key", "may_use", "UNAUTHORIZED_MISSING", "UNAUTHORIZED_WRONG"]


def hash_key(key: str) -> str:
    """The hex SHA-256 of a client key, as ``[[keys]] sha256`` holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


class Refusal(NamedTuple):
    """An answer given instead of running the request: 401 here, 429 from ``proxy.ratelimit``."""

    status: int
    body: bytes
    """JSON in OpenAI's error shape."""
    note: str
    """For the log line (``unauthorized``, ``rate-limited``)."""


def _unauthorized(message: str) -> Refusal:
    body = msgspec.json.encode(ErrorResponse(ErrorDetail(message, "invalid_request_error", None, "invalid_api_key")))
    return Refusal(401, body, "unauthorized")


UNAUTHORIZED_MISSING = _unauthorized(
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer "
    "auth (i.e. Authorization: Bearer YOUR_KEY).")
UNAUTHORIZED_WRONG = _unauthorized("Incorrect API key provided.")


class ClientKeys:
    """The configured client keys (none: open)."""

    __slots__ = ("_keys",)

    def __init__(self, keys: list[KeySettings]):
        self._keys = [(bytes.fromhex(k.sha256), k) for k in keys]

    @property
    def open(self) -> bool:
        return not self._keys

    def identify(self, authorization: bytes | None) -> KeySettings | None:
        """The key an ``Authorization`` header carries, or None (absent, not Bearer, unknown)."""
        if not authorization or authorization[:7].lower() != b"bearer ":
            return None
        digest = hashlib.sha256(authorization[7:].strip()).digest()
        found = None
        for stored, key in self._keys:
            if hmac.compare_digest(stored, digest):
                found = key
        return found


def may_use(key: KeySettings | None, model: str) -> bool:
    """Whether ``key`` (None: open podgate) may use ``model``."""
    return key is None or key.models is None or model in key.models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``podgate hash-key`` takes no arguments: the key comes on stdin, never on the command line."""


def run(args: argparse.Namespace) -> int:
    """``podgate hash-key``: a key on stdin (one line; surrounding whitespace dropped) → its hash."""
    key = sys.stdin.readline().strip()
    if not key:
        print("podgate hash-key: give the key on stdin, e.g. `podgate hash-key < key.txt`", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0
