"""Connections shared by web, worker and migrate: PostgreSQL and Redis, from the environment."""

import os
import signal
import sys
import time

import psycopg2
import redis

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://quickstart:quickstart@db/quickstart")
REDIS_URL = os.environ.get("REDIS_URL", "redis://cache:6379/0")
# The Redis list jobs wait in.
QUEUE = "jobs"


def db():
    """A new PostgreSQL connection (autocommit)."""
    conn = psycopg2.connect(DATABASE_URL, connect_timeout=5)
    conn.autocommit = True
    return conn


def cache():
    """A Redis client."""
    return redis.Redis.from_url(REDIS_URL, socket_timeout=10, decode_responses=True)


def retry(what, fn, attempts=30):
    """Calls fn until it succeeds (a service that just started may not answer yet)."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (psycopg2.OperationalError, redis.ConnectionError) as e:
            if attempt == attempts:
                raise
            print(f"{what}: not ready ({str(e).strip()}), retrying", flush=True)
            time.sleep(1)


def exit_on_term():
    """Ends the process on SIGTERM (as PID 1 of a container, the default would ignore it)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
