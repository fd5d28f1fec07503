"""The migrate job: brings the database schema up to date, then exits (web and worker wait for it)."""

import common

MIGRATIONS = [
    """
    CREATE TABLE IF NOT EXISTS results (
        id         text PRIMARY KEY,
        input      text NOT NULL,
        words      integer NOT NULL,
        chars      integer NOT NULL,
        shout      text NOT NULL,
        worker     text NOT NULL,
        queued_at  timestamptz NOT NULL,
        done_at    timestamptz NOT NULL DEFAULT now()
    )
    """,
    "CREATE INDEX IF NOT EXISTS results_done_at ON results (done_at DESC)",
]


def main():
    conn = common.retry("migrate: database", common.db)
    with conn.cursor() as cur:
        for sql in MIGRATIONS:
            cur.execute(sql)
        cur.execute("SELECT count(*) FROM results")
        (count,) = cur.fetchone()
    conn.close()
    print(f"migrate: schema up to date ({len(MIGRATIONS)} steps, {count} results kept)")


if __name__ == "__main__":
    main()
