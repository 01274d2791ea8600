"""A local Hugging Face Hub-compatible server on 127.0.0.1, for tests.

It implements the endpoints `huggingface_hub` uses to create model repos,
upload files in commits (inline "regular" uploads), list revisions and
files, and resolve files by branch or commit; every request is counted.
Paths in `server.truncate` are served cut off halfway, as a dropped connection.
Point `HF_ENDPOINT` at `server.url` (in a fresh process, since
`huggingface_hub` reads it at import).

    server = HubServer().start()
    ...
    server.stop()
"""

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from urllib.parse import unquote
from urllib.parse import urlparse


class HubServer:
    def __init__(self):
        self.repos = {}  # repo_id -> {"commits": {sha: {path: bytes}}, "refs": {name: sha}, "log": [sha]}
        self.requests = []
        self.truncate = set()  # file paths whose downloads break off halfway (fault injection)
        self.lock = threading.Lock()
        self._httpd = None

    @property
    def url(self):
        host, port = self._httpd.server_address
        return f"http://{host}:{port}"

    def start(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._handle(self, "HEAD")

            def do_GET(self):
                hub._handle(self, "GET")

            def do_POST(self):
                hub._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- helpers -----------------------------------------------------------
    def _reply(self, handler, status, body=b"", headers=None, method="GET"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(body)

    def _error(self, handler, status, code, message, method):
        self._reply(handler, status, {"error": message},
                    {"X-Error-Code": code, "X-Error-Message": message}, method)

    def _resolve(self, repo, revision):
        revision = unquote(revision)
        if revision in repo["refs"]:
            return repo["refs"][revision]
        if revision in repo["commits"]:
            return revision
        return None

    # --- routes ------------------------------------------------------------
    def _handle(self, handler, method):
        path = urlparse(handler.path).path
        if path == "/_requests":  # for test processes; not counted
            return self._reply(handler, 200, {"count": len(self.requests)}, method=method)
        with self.lock:
            self.requests.append((method, path))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        try:
            if parts[:2] == ["api", "whoami-v2"]:
                return self._reply(handler, 200, {"name": "tester", "type": "user", "orgs": [],
                                                  "auth": {"accessToken": {"role": "write"}}},
                                   method=method)
            if parts[:2] == ["api", "validate-yaml"]:  # model card metadata check
                return self._reply(handler, 200, {"errors": [], "warnings": []}, method=method)
            if parts[:3] == ["api", "repos", "create"] and method == "POST":
                return self._create(handler, json.loads(body or b"{}"))
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id = "/".join(parts[2:4])
                return self._api(handler, method, repo_id, parts[4:], body)
            if "resolve" in parts and len(parts) >= 5:
                index = parts.index("resolve")
                repo_id = "/".join(parts[:index])
                return self._file(handler, method, repo_id, parts[index + 1],
                                  "/".join(parts[index + 2:]))
        except Exception as error:  # report instead of hanging the client
            return self._error(handler, 500, "ServerError", repr(error), method)
        return self._error(handler, 404, "NotFound", f"no route for {path}", method)

    def _create(self, handler, payload):
        repo_id = (f"{payload['organization']}/{payload['name']}"
                   if payload.get("organization") else payload["name"])
        if "/" not in repo_id:
            repo_id = f"tester/{repo_id}"
        with self.lock:
            if repo_id in self.repos:
                return self._reply(handler, 409, {"error": "You already created this repo",
                                                  "url": f"{self.url}/{repo_id}"},
                                   {"X-Error-Code": "RepoExists"}, "POST")
            sha = hashlib.sha1(f"init {repo_id}".encode()).hexdigest()
            self.repos[repo_id] = {"commits": {sha: {}}, "refs": {"main": sha}, "log": [sha]}
        return self._reply(handler, 200, {"url": f"{self.url}/{repo_id}", "name": repo_id})

    def _info(self, repo_id, sha, files):
        return {"id": repo_id, "modelId": repo_id, "sha": sha, "private": False,
                "siblings": [{"rfilename": p, "size": len(b)} for p, b in sorted(files.items())],
                "tags": [], "downloads": 0, "likes": 0}

    def _api(self, handler, method, repo_id, rest, body):
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(handler, 404, "RepoNotFound", f"{repo_id} not found", method)
        if not rest or rest[0] == "revision":
            sha = self._resolve(repo, rest[1] if len(rest) > 1 else "main")
            if sha is None:
                return self._error(handler, 404, "RevisionNotFound", "Invalid rev id", method)
            return self._reply(handler, 200, self._info(repo_id, sha, repo["commits"][sha]),
                               method=method)
        if rest[0] == "tree":
            sha = self._resolve(repo, rest[1] if len(rest) > 1 else "main")
            if sha is None:
                return self._error(handler, 404, "RevisionNotFound", "Invalid rev id", method)
            files = repo["commits"][sha]
            return self._reply(handler, 200, [
                {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                for p, b in sorted(files.items())], method=method)
        if rest[0] == "refs":
            return self._reply(handler, 200, {"branches": [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                for n, s in repo["refs"].items()], "tags": [], "converts": []}, method=method)
        if rest[0] == "commits":
            return self._reply(handler, 200, [{"id": s, "title": s, "message": "", "authors": [],
                                               "date": "2026-01-01T00:00:00.000Z"}
                                              for s in reversed(repo["log"])], method=method)
        if rest[0] == "preupload":
            files = json.loads(body)["files"]
            return self._reply(handler, 200, {"files": [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                for f in files], "commitOid": repo["refs"]["main"]})
        if rest[0] == "commit":
            return self._commit(handler, repo_id, repo, rest[1] if len(rest) > 1 else "main",
                                body)
        return self._error(handler, 404, "NotFound", f"no api route {rest}", method)

    def _commit(self, handler, repo_id, repo, branch, body):
        branch = unquote(branch)
        with self.lock:
            files = dict(repo["commits"][repo["refs"].get(branch, repo["refs"]["main"])])
            summary = ""
            for line in body.decode().splitlines():
                if not line.strip():
                    continue
                item = json.loads(line)
                value = item.get("value", {})
                if item["key"] == "header":
                    summary = value.get("summary", "")
                elif item["key"] == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "deletedFile":
                    files.pop(value["path"], None)
                elif item["key"] == "lfsFile":
                    return self._error(handler, 400, "Unsupported",
                                       "this test server takes regular uploads only", "POST")
            digest = hashlib.sha1()
            digest.update(repo["log"][-1].encode() + summary.encode())
            for path, content in sorted(files.items()):
                digest.update(path.encode() + hashlib.sha1(content).digest())
            sha = digest.hexdigest()
            repo["commits"][sha] = files
            repo["refs"][branch] = sha
            repo["log"].append(sha)
        return self._reply(handler, 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{sha}",
                                          "commitOid": sha, "pullRequestUrl": None})

    def _file(self, handler, method, repo_id, revision, path):
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(handler, 404, "RepoNotFound", f"{repo_id} not found", method)
        sha = self._resolve(repo, revision)
        if sha is None:
            return self._error(handler, 404, "RevisionNotFound", "Invalid rev id", method)
        files = repo["commits"][sha]
        if path not in files:
            return self._error(handler, 404, "EntryNotFound", f"{path} not found", method)
        content = files[path]
        etag = hashlib.sha1(content).hexdigest()
        if path in self.truncate and method == "GET":  # promise it all, send half, hang up
            handler.send_response(200)
            for key, value in {"X-Repo-Commit": sha, "ETag": f'"{etag}"',
                               "Content-Length": str(len(content))}.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(content[:len(content) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return None
        return self._reply(handler, 200, content, {
            "X-Repo-Commit": sha, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream",
        }, method)
