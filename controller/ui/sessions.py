"""Dashboard sessions: the controller's token is exchanged once for a random
session id (the cookie) and a CSRF token (sent back in a header with every
action). Kept in memory: a restarted controller asks for the token again."""

from __future__ import annotations

import hmac
import secrets
import threading
from dataclasses import dataclass
from typing import Final

from kvmss.base.clock import Clock

SESSION_SECONDS: Final = 8 * 3600
MAX_SESSIONS: Final = 1000  # the oldest go first: a sign-in loop cannot grow memory


@dataclass(frozen=True)
class Session:
    sid: str
    csrf: str
    expires: float  # clock.now() seconds


class Sessions:
    def __init__(self, token: str, clock: Clock, seconds: float = SESSION_SECONDS) -> None:
        self._secret = token.encode()
        self._clock = clock
        self.seconds = seconds
        self._lock = threading.Lock()
        self._by_sid: dict[str, Session] = {}

    def sign_in(self, token: str) -> Session | None:
        """A new session for the controller's own token, else None."""
        if not hmac.compare_digest(token.encode(), self._secret):
            return None
        s = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), self._clock.now() + self.seconds
        )
        with self._lock:
            while len(self._by_sid) >= MAX_SESSIONS:
                self._by_sid.pop(next(iter(self._by_sid)))
            self._by_sid[s.sid] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The unexpired session with that id."""
        if not sid:
            return None
        with self._lock:
            s = self._by_sid.get(sid)
            if s is not None and s.expires <= self._clock.now():
                del self._by_sid[sid]
                s = None
        return s

    def csrf_ok(self, s: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), s.csrf.encode())

    def sign_out(self, sid: str) -> None:
        with self._lock:
            self._by_sid.pop(sid, None)
