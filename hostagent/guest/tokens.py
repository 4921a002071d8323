"""Per-instance tokens guests use to report to their agent.

token = HMAC-SHA256(agent guest secret, instance name): nothing to store per
instance, and one guest's token says nothing about another's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from kvmss.base import atomicfile


class GuestTokens:
    def __init__(self, secret_file: Path) -> None:
        if not secret_file.exists():
            atomicfile.write_bytes(secret_file, secrets.token_bytes(32), mode=0o600)
        self._key = secret_file.read_bytes()
        os.chmod(secret_file, 0o600)

    def token(self, instance: str) -> str:
        return hmac.new(self._key, instance.encode(), hashlib.sha256).hexdigest()

    def verify(self, instance: str, token: str) -> bool:
        return hmac.compare_digest(self.token(instance).encode(), token.encode())
