"""A stand-in for an OpenAI-compatible server, for the pictures of scripts/screenshots/
only: it refuses every request (`fail`: 503, as an overloaded provider answers), never
answers (`hang`), so that the board has failed and running jobs to show, or (`flaky`,
for trace.sh) answers its first request with a 500, its second with a 429 and
`Retry-After: 1`, and every later one with a question, so that one question's trace
shows a retried run and a wait the provider asked for.

    python3 scripts/screenshots/llm_standin.py fail|hang|flaky PORT
"""

import http.server
import json
import sys
import time


class StandIn(http.server.BaseHTTPRequestHandler):
    mode = "fail"
    seen = 0

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.mode == "hang":
            # Longer than the worker's LLM_TIMEOUT_SECS: the attempt stays running.
            time.sleep(3600)
            return
        if self.mode == "flaky":
            StandIn.seen += 1
            if StandIn.seen == 1:
                return self.reply(500, {"error": {"message": "Internal error", "type": "server_error"}})
            if StandIn.seen == 2:
                return self.reply(
                    429,
                    {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
                    {"Retry-After": "1"},
                )
            time.sleep(0.8)  # a model takes a moment
            question = {"question_text": "How would you trace one request across a job queue?", "question_type": "technical"}
            return self.reply(
                200,
                {
                    "id": "chatcmpl-standin",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": "gpt-4o-mini",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(question)}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 412, "completion_tokens": 38, "total_tokens": 450},
                },
            )
        self.reply(503, {"error": {"message": "The model is overloaded; try again later.", "type": "server_error"}})

    def reply(self, status, payload, headers=None):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode not in ("fail", "hang", "flaky"):
        sys.exit("usage: llm_standin.py fail|hang|flaky PORT")
    StandIn.mode = mode
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), StandIn)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
