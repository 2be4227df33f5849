"""A dumps site on 127.0.0.1 for the download tests, run as its own process: serves a folder laid out as
dumps.wikimedia.org (`<wiki>/` listing its dated folders, files with HEAD and HTTP Range), logs each request,
and can cut the first whole-file answer of one file halfway (the connection closes early).

    python tests/wiki_server.py ROOT PORT LOG [--cut NAME]
"""
import argparse
import http.server
import re
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("port", type=int)
    ap.add_argument("log")
    ap.add_argument("--cut", default=None)
    args = ap.parse_args()
    cut = {"name": args.cut}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=args.root, **kw)

        def log_request(self, code="-", size="-"):
            with open(args.log, "a") as f:
                f.write(f"{self.command} {self.path} range={self.headers.get('Range')}\n")

        def log_message(self, fmt, *a):  # nothing on stderr
            pass

        def do_GET(self):
            path = Path(self.translate_path(self.path))
            if not path.is_file():
                return super().do_GET()
            data = path.read_bytes()
            m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            start = int(m.group(1)) if m else 0
            self.send_response(206 if m else 200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            if m:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            self.log_message("")
            if cut["name"] == path.name and not m:
                cut["name"] = None
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(data[start:])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
