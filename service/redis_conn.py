"""The API's Redis client: it fails fast, and a per-process breaker keeps a stalled Redis
from holding every request thread (and the health checks queued behind them)."""

from __future__ import annotations

import threading
import time

import redis

from .config import Settings


# After Redis failed to answer, requests fail at once for this long instead of each waiting
# out its own timeout; then one request tries Redis again (the others still fail fast).
BREAKER_OPEN_SECONDS = 1.0


class RedisUnavailable(redis.exceptions.ConnectionError):
    """Raised without touching the network while the breaker is open (a ConnectionError, so
    the API's error handler answers it like any other unreachable Redis: 503)."""


class RedisBreaker:
    """What this process knows about Redis, shared by all its threads and connections: once
    Redis did not answer (refused, or silent past the timeout), the next requests fail fast.
    Without it a stalled Redis held every gunicorn thread for a full timeout per request, and
    /healthz, queued behind them, took tens of seconds."""

    def __init__(self, open_seconds: float = BREAKER_OPEN_SECONDS, probe_seconds: float = 5.0):
        self.open_seconds = open_seconds
        # Longest one try of Redis can take (connect + reply timeouts): while it runs, no
        # other thread tries, so a stalled Redis holds one thread per process, not more.
        self.probe_seconds = probe_seconds
        self._lock = threading.Lock()
        self._open_until = 0.0  # time.monotonic(); 0.0 while Redis answers

    @property
    def is_open(self) -> bool:
        return bool(self._open_until) and time.monotonic() < self._open_until

    def admit(self) -> None:
        if not self._open_until:
            return
        now = time.monotonic()
        with self._lock:
            if now < self._open_until:
                raise RedisUnavailable(
                    f"Redis did not answer less than {self.open_seconds:g} s ago; not trying again before then")
            if self._open_until:
                # This caller tries Redis; the others keep failing fast until it knows.  If
                # it never reports (an error of another kind), the next one tries after this.
                self._open_until = now + self.probe_seconds

    def failed(self) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self.open_seconds

    def answered(self) -> None:
        if self._open_until:
            with self._lock:
                self._open_until = 0.0


class _GuardedConnection:
    """Mixed in front of the pool's connection class: tells the breaker how Redis did."""

    breaker: RedisBreaker

    def connect_check_health(self, *args, **kwargs):
        # Every way of (re)connecting goes through here, the client's retries included.
        try:
            return super().connect_check_health(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            self.breaker.failed()
            raise

    def send_packed_command(self, *args, **kwargs):
        try:
            return super().send_packed_command(*args, **kwargs)
        except redis.exceptions.TimeoutError:
            self.breaker.failed()
            raise

    def read_response(self, *args, **kwargs):
        try:
            response = super().read_response(*args, **kwargs)
        except redis.exceptions.TimeoutError:
            self.breaker.failed()
            raise
        except (redis.exceptions.ConnectionError, OSError):
            # A pooled socket closed under us (Redis restarted): the client reconnects, and
            # a failing reconnect is what opens the breaker.
            raise
        except redis.exceptions.RedisError:
            self.breaker.answered()  # an error reply is an answer
            raise
        self.breaker.answered()
        return response


class _GuardedPool(redis.ConnectionPool):
    def __init__(self, *args, breaker: RedisBreaker, **kwargs):
        super().__init__(*args, **kwargs)
        self.breaker = breaker

    def get_connection(self, *args, **kwargs):
        self.breaker.admit()  # before any socket work, outside the client's retries
        return super().get_connection(*args, **kwargs)


def redis_client(settings: Settings) -> redis.Redis:
    """The API's client: it fails fast.  A stalled Redis costs one request one socket
    timeout; after that the breaker answers for it (see RedisBreaker).  A timed-out command
    is not retried (a silent Redis stays silent, and a retry doubles the wait); a refused or
    dropped connection is retried once, which is what a pooled socket needs after a Redis
    restart."""
    from redis.backoff import ExponentialBackoff
    from redis.connection import parse_url
    from redis.retry import Retry

    breaker = RedisBreaker(probe_seconds=settings.redis_timeout_seconds + settings.redis_connect_timeout_seconds + 0.5)
    base = parse_url(settings.redis_url).get("connection_class", redis.Connection)
    connection_class = type(f"Guarded{base.__name__}", (_GuardedConnection, base), {"breaker": breaker})
    pool = _GuardedPool.from_url(
        settings.redis_url,
        breaker=breaker,
        connection_class=connection_class,
        health_check_interval=30,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    )
    client = redis.Redis(connection_pool=pool)
    client.breaker = breaker
    return client
