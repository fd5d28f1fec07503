"""The web service: a page that queues jobs in Redis and shows the results the worker stored
in PostgreSQL.

  GET  /                the page (a form, the latest results)
  POST /jobs            queue a job from the form, then back to the page
  POST /api/jobs        queue a job: {"text": "..."} -> 202 {"id": "..."}
  GET  /api/jobs/ID     a job's result (404 while it waits)
  GET  /api/results     the latest results
  GET  /healthz         200 when PostgreSQL and Redis answer

Edit this file while `tug watch` runs: the sync rule copies it into the container and the
reloader below restarts the server.
"""

import datetime
import html
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import common

TITLE = "Hello from the tug quickstart"
PORT = int(os.environ.get("PORT", "8000"))

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .3rem .5rem; text-align: left; }}
code {{ background: #f3f3f3; padding: 0 .2rem; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Each job goes from <b>web</b> through a <b>Redis</b> list to the <b>worker</b>, which stores
its result in <b>PostgreSQL</b>; this page reads the results from PostgreSQL.
Page views (counted in Redis): {views}. Jobs waiting in Redis: {waiting}.</p>
<form method="post" action="/jobs">
<input name="text" size="60" placeholder="some text for the worker" required>
<button>Queue a job</button>
</form>
<h2>Latest results</h2>
<table>
<tr><th>input</th><th>words</th><th>chars</th><th>shouted</th><th>worker</th><th>queued</th><th>done in</th></tr>
{rows}
</table>
<p>Served by <code>{host}</code>, pid {pid}.</p>
</body></html>
"""


def latest(limit=20):
    conn = common.db()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id, input, words, chars, shout, worker, queued_at, done_at"
                " FROM results ORDER BY done_at DESC LIMIT %s",
                (limit,),
            )
            return [row_json(r) for r in cur.fetchall()]
    finally:
        conn.close()


def one(job_id):
    conn = common.db()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id, input, words, chars, shout, worker, queued_at, done_at"
                " FROM results WHERE id = %s",
                (job_id,),
            )
            r = cur.fetchone()
            return row_json(r) if r else None
    finally:
        conn.close()


def row_json(r):
    return {
        "id": r[0], "input": r[1], "words": r[2], "chars": r[3], "shout": r[4],
        "worker": r[5], "queued_at": r[6].isoformat(), "done_at": r[7].isoformat(),
        "took_ms": round((r[7] - r[6]).total_seconds() * 1000),
    }


def queue_job(text):
    job = {
        "id": uuid.uuid4().hex,
        "text": text,
        "queued_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    common.cache().lpush(common.QUEUE, json.dumps(job))
    return job["id"]


class Handler(BaseHTTPRequestHandler):
    server_version = "quickstart-web"

    def send(self, code, body, ctype="application/json", headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode("utf-8", "replace")

    def do_GET(self):
        if self.path == "/":
            redis = common.cache()
            rows = "\n".join(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td></tr>".format(
                    *(html.escape(str(r[k])) for k in
                      ("input", "words", "chars", "shout", "worker", "queued_at", "took_ms")))
                for r in latest()
            )
            page = PAGE.format(
                title=html.escape(TITLE), views=redis.incr("views"),
                waiting=redis.llen(common.QUEUE), rows=rows,
                host=html.escape(os.uname().nodename), pid=os.getpid())
            self.send(200, page, "text/html; charset=utf-8")
        elif self.path == "/api/results":
            self.send(200, json.dumps(latest()))
        elif self.path.startswith("/api/jobs/"):
            r = one(self.path.rsplit("/", 1)[1])
            self.send(200 if r else 404, json.dumps(r or {"status": "waiting"}))
        elif self.path == "/healthz":
            common.cache().ping()
            common.db().close()
            self.send(200, '{"status": "ok"}')
        else:
            self.send(404, '{"error": "not found"}')

    def do_POST(self):
        if self.path == "/jobs":
            text = parse_qs(self.body()).get("text", [""])[0].strip()
            if text:
                queue_job(text)
            self.send(303, "", "text/plain", [("Location", "/")])
        elif self.path == "/api/jobs":
            try:
                text = str(json.loads(self.body())["text"])
            except (ValueError, KeyError, TypeError):
                self.send(400, '{"error": "want {\\"text\\": \\"...\\"}"}')
                return
            self.send(202, json.dumps({"id": queue_job(text)}))
        else:
            self.send(404, '{"error": "not found"}')

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except Exception as e:  # a database or cache that went away: say so, keep serving
            self.log_error("%s", e)
            try:
                self.send(503, json.dumps({"error": str(e)}))
            except OSError:
                pass

    def log_message(self, fmt, *args):
        if self.path != "/healthz":
            sys.stderr.write("web: %s %s\n" % (self.address_string(), fmt % args))


def reload_on_change(root):
    """The development reloader: restarts the server when a source file under root changes
    (what `tug watch` syncs in)."""

    def snapshot():
        seen = {}
        for d, _, files in os.walk(root):
            for f in files:
                if f.endswith(".py"):
                    p = os.path.join(d, f)
                    try:
                        seen[p] = os.stat(p).st_mtime_ns
                    except OSError:
                        pass
        return seen

    before = snapshot()
    while True:
        time.sleep(0.5)
        now = snapshot()
        if now != before:
            changed = sorted(p for p in set(now) | set(before) if now.get(p) != before.get(p))
            print(f"web: {', '.join(changed)} changed: restarting", flush=True)
            os.execv(sys.executable, [sys.executable] + sys.argv)


def main():
    common.exit_on_term()
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    threading.Thread(target=reload_on_change, args=(os.path.dirname(os.path.abspath(__file__)),),
                     daemon=True).start()
    print(f"web: serving on port {PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
