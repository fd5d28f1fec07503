"""The worker: takes jobs from the Redis queue, works them out, and stores the results in
PostgreSQL, where web reads them."""

import json
import socket

import common

HOST = socket.gethostname()


def work(job):
    """What a job asks for: a few facts about its text."""
    text = job["text"]
    return {"words": len(text.split()), "chars": len(text), "shout": text.upper()}


def main():
    common.exit_on_term()
    queue = common.cache()
    common.retry("worker: redis", queue.ping)
    conn = common.retry("worker: database", common.db)
    print(f"worker {HOST}: waiting for jobs on redis list {common.QUEUE!r}")
    while True:
        item = queue.brpop(common.QUEUE, timeout=5)
        if item is None:
            continue
        job = json.loads(item[1])
        result = work(job)
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO results (id, input, words, chars, shout, worker, queued_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
                (job["id"], job["text"], result["words"], result["chars"], result["shout"],
                 HOST, job["queued_at"]),
            )
        print(f"worker {HOST}: job {job['id']}: {result['words']} words")


if __name__ == "__main__":
    main()
