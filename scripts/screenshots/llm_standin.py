"""A stand-in for an OpenAI-compatible server, for scripts/screenshots/board.sh only: it
either refuses every request (`fail`: 503, as an overloaded provider answers) or
never answers (`hang`), so that the board has failed and running jobs to show.

    python3 scripts/screenshots/llm_standin.py fail|hang PORT
"""

import http.server
import json
import sys
import time


class StandIn(http.server.BaseHTTPRequestHandler):
    mode = "fail"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.mode == "hang":
            # Longer than the worker's LLM_TIMEOUT_SECS: the attempt stays running.
            time.sleep(3600)
            return
        body = json.dumps(
            {"error": {"message": "The model is overloaded; try again later.", "type": "server_error"}}
        ).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    mode, port = sys.argv[1], int(sys.argv[2])
    if mode not in ("fail", "hang"):
        sys.exit("usage: llm_standin.py fail|hang PORT")
    StandIn.mode = mode
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), StandIn)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
