"""A tiny OpenAI-compatible chat-completions server on 127.0.0.1 for judge tests, with scripted failures."""

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JudgeServer:
    """Verdict: 'yes'/4 when the correct answer occurs in the prediction, else 'no'/1.

    `script[answer]` is a list of behaviours consumed one per request for that answer before the normal reply:
    "prose" (no dict in the reply), "badjson" (HTTP body not JSON), "500", "sleep" (slower than the client timeout),
    "401" (fatal), "drip" (the whole response, status line included, one byte every `drip_s`), "latin1" (the reply
    encoded as Latin-1: not UTF-8). `always`, when set, is the behaviour of every request (e.g. "500": an outage).
    `authorization` collects the Authorization header of every request (None when absent).
    """

    def __init__(self, sleep_s: float = 1.0, drip_s: float = 1.0) -> None:
        self.script: dict[str, list[str]] = {}
        self.calls: Counter = Counter()
        self.sleep_s = sleep_s
        self.drip_s = drip_s
        self.always: str | None = None
        self.authorization: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                answer = re.search(r"Correct Answer: (.*)\n", user).group(1)
                pred = re.search(r"Predicted Answer: (.*)\n", user).group(1)
                server.calls[answer] += 1
                server.authorization.append(self.headers.get("Authorization"))
                todo = server.script.get(answer) or []
                action = server.always or (todo.pop(0) if todo else "ok")
                if action == "sleep":
                    time.sleep(server.sleep_s)
                if action in ("500", "401"):
                    self.send_response(int(action))
                    self.end_headers()
                    self.wfile.write(b'{"error": "scripted"}')
                    return
                verdict = "{'pred': 'yes', 'score': 4}" if answer in pred else "{'pred': 'no', 'score': 1}"
                content = "I believe they match well." if action == "prose" else verdict
                if action == "latin1":
                    content = "Très bien: " + verdict
                payload = {"model": body["model"] + "-served", "choices": [{"message": {"content": content}}]}
                data = b"<html>oops" if action == "badjson" else json.dumps(payload, ensure_ascii=False).encode(
                    "latin-1" if action == "latin1" else "utf-8")
                if action == "drip":
                    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                    try:
                        for byte in head.encode() + data:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(server.drip_s)
                    except OSError:  # the client gave up
                        pass
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "JudgeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
