"""The local separation page's HTTP server: the standard library's ThreadingHTTPServer, one
separation at a time in a worker thread, the results of each job in a temporary folder.

HTTP API (what the page, mss_tf.app.page, uses; the tests call it with urllib):

* ``GET /`` the page; ``GET /api/model`` {"model", "targets", "sample_rate", "max_upload_mb", "queue"}.
* ``POST /api/jobs`` the audio file as the request body (its name in the ``X-Filename`` header):
  202 {"id"}; 411 without a Content-Length; 413 when larger than ``max_upload_mb`` (refused
  before reading it); 415 when it is not audio the separator can read; 429 when ``queue`` jobs
  are already waiting or running (a new upload is refused, never one accepted before).
* ``GET /api/jobs/<id>`` {"state": queued|running|done|error, "seconds_done", "seconds_total",
  "progress" (0..1 or null), "targets", "error"}; 404 for an unknown job.
* ``GET /api/jobs/<id>/<target>.wav`` (32-bit float, as separate.py writes it), ``.flac``
  (16-bit) and ``.png`` (its spectrogram), once the job is done.

Jobs run one after another: the model is loaded once and uses the cores it is given. Every
finished job's stems stay available until the server stops; then the temporary folder is removed.
"""

from __future__ import annotations

import json
import queue
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from mss_tf.app.page import PAGE
from mss_tf.errors import MssError

DEFAULT_MAX_UPLOAD_MB = 200.0
DEFAULT_QUEUE = 4
FORMATS = ("wav", "flac")
BLOCK = 1 << 16  # bytes read from an upload at a time
SPECTROGRAM_COLUMNS = 900  # time columns of a stem's spectrogram image


@dataclass
class Job:
    """One uploaded file and its separation."""

    id: str
    name: str
    folder: Path
    state: str = "queued"
    frames_done: int = 0
    frames_total: int | None = None
    sample_rate: int = 1
    error: str | None = None
    upload: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    def status(self, targets: list[str]) -> dict[str, Any]:
        total = self.frames_total
        return {"id": self.id, "name": self.name, "state": self.state,
                "seconds_done": self.frames_done / self.sample_rate,
                "seconds_total": None if total is None else total / self.sample_rate,
                "progress": 1.0 if self.state == "done" else (min(1.0, self.frames_done / total) if total else None),
                "targets": targets, "error": self.error}


class SeparationApp:
    """The jobs of one server: upload checks, the queue, the worker thread, the stems on disk.

    Args:
        separator: a loaded separator (mss_tf.export.load_separator: a run or a SavedModel).
        model_name: shown on the page.
        max_upload_mb: the largest upload accepted, in megabytes (10^6 bytes).
        queue_size: jobs waiting or running at once; one more upload is answered 429.
    """

    def __init__(self, separator, model_name: str, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                 queue_size: int = DEFAULT_QUEUE) -> None:
        self.separator = separator
        self.model_name = model_name
        self.targets = list(separator.targets)
        self.max_upload_bytes = int(max_upload_mb * 1e6)
        self.max_upload_mb = max_upload_mb
        self.queue_size = queue_size
        self.folder = Path(tempfile.mkdtemp(prefix="mss-app-"))
        self.jobs: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.pending: queue.Queue[Job | None] = queue.Queue()
        self.worker = threading.Thread(target=self._work, name="separation", daemon=True)
        self.worker.start()

    def info(self) -> dict[str, Any]:
        return {"model": self.model_name, "targets": self.targets, "sample_rate": self.separator.sample_rate,
                "max_upload_mb": self.max_upload_mb, "queue": self.queue_size, "formats": list(FORMATS)}

    def active(self) -> int:
        with self.lock:
            return sum(job.state in ("queued", "running") for job in self.jobs.values())

    def new_job(self, name: str) -> Job:
        job_id = uuid.uuid4().hex[:12]
        safe = "".join(c for c in Path(name).name if c.isalnum() or c in "._- ")[:80] or "upload"
        folder = self.folder / job_id
        folder.mkdir()
        return Job(id=job_id, name=safe, folder=folder)

    def check_audio(self, path: Path) -> None:
        """AudioError when `path` is not audio the separator can read."""
        from mss_tf.audio import io as audio_io

        with audio_io.AudioReader(path) as reader:
            if reader.frames == 0:
                from mss_tf.errors import AudioError

                raise AudioError(f"{path.name}: no samples")

    def submit(self, job: Job) -> bool:
        """Queue a checked job; False (and the job's folder removed) when the queue is full."""
        with self.lock:
            if sum(j.state in ("queued", "running") for j in self.jobs.values()) >= self.queue_size:
                shutil.rmtree(job.folder, ignore_errors=True)
                return False
            self.jobs[job.id] = job
        self.pending.put(job)
        return True

    def _work(self) -> None:
        from mss_tf.inference import separate_file

        while True:
            job = self.pending.get()
            if job is None:
                return
            job.state = "running"
            outputs = {t: job.folder / "stems" / f"{t}.wav" for t in self.targets}

            def progress(done: int, total: int | None, rate: int, job: Job = job) -> None:
                job.frames_done, job.frames_total, job.sample_rate = done, total, rate

            try:
                separate_file(self.separator, job.upload, outputs, progress=progress)
                job.files = dict(outputs)
                job.frames_total = job.frames_done
                job.state = "done"
            except MssError as exc:
                job.error, job.state = " ".join(str(exc).split()), "error"
            except Exception as exc:  # noqa: BLE001 -- one bad file must not stop the server
                job.error, job.state = f"separation failed: {type(exc).__name__}: {exc}", "error"
            finally:
                job.upload.unlink(missing_ok=True)

    def stem(self, job: Job, target: str, kind: str) -> Path:
        """The stem's file in `kind` (wav, flac, png), made from the wav the first time it is asked for."""
        wav = job.files[target]
        if kind == "wav":
            return wav
        path = wav.with_suffix("." + kind)
        with self.lock:  # two requests for the same file write it once
            if not path.is_file():
                import soundfile

                audio, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
                if kind == "flac":
                    from mss_tf.audio import io as audio_io

                    audio_io.save_audio(path, audio, rate)
                else:
                    from mss_tf.evaluation.listen_page import write_spectrograms

                    write_spectrograms([audio], path, columns=SPECTROGRAM_COLUMNS)
        return path

    def close(self, wait_seconds: float = 5.0) -> None:
        """Stop the worker (it ends after the job it is running; waited for up to `wait_seconds`)
        and remove every job's files."""
        self.pending.put(None)
        self.worker.join(timeout=wait_seconds)
        shutil.rmtree(self.folder, ignore_errors=True)


class Handler(BaseHTTPRequestHandler):
    server_version = "mss-tf"
    app: SeparationApp  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- the base class's name
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict[str, Any]) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        app = self.app
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return self._send(200, PAGE.encode(), "text/html; charset=utf-8")
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        if path == "/api/model":
            return self._json(200, app.info())
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["api", "jobs"]:
            job = app.jobs.get(parts[2])
            if job is None:
                return self._error(404, f"no job {parts[2]!r} (results last until the server stops)")
            if len(parts) == 3:
                return self._json(200, job.status(app.targets))
            target, _, kind = parts[3].rpartition(".")
            if len(parts) == 4 and target in app.targets and kind in FORMATS + ("png",):
                if job.state != "done":
                    return self._error(409, f"job {job.id} is {job.state}: no stems yet")
                file = app.stem(job, target, kind)
                content_type = {"wav": "audio/wav", "flac": "audio/flac", "png": "image/png"}[kind]
                download = f"{Path(job.name).stem}-{target}.{kind}"
                plain = download.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_")
                disposition = {} if kind == "png" else {  # headers are latin-1: the UTF-8 name goes quoted
                    "Content-Disposition": f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(download)}"}
                return self._send(200, file.read_bytes(), content_type, disposition)
        return self._error(404, f"nothing at {path}")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        app = self.app
        if self.path.split("?", 1)[0] != "/api/jobs":
            return self._error(404, f"nothing to post at {self.path}")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            return self._error(411, "send the file with a Content-Length")
        length = int(length)
        if length > app.max_upload_bytes:
            self.close_connection = True  # the body is not read: this connection cannot be reused
            return self._error(413, f"the file has {length / 1e6:.1f} MB; this server takes at most "
                                    f"{app.max_upload_mb:g} MB (--max-upload-mb)")
        if length == 0:
            return self._error(415, "the upload is empty")
        if app.active() >= app.queue_size:
            self.close_connection = True
            return self._error(429, f"{app.queue_size} songs are already waiting or being separated; try again "
                                    "when one is done")
        job = app.new_job(unquote(self.headers.get("X-Filename") or "upload"))
        suffix = Path(job.name).suffix.lower() if Path(job.name).suffix else ".bin"
        job.upload = job.folder / f"upload{suffix}"
        remaining = length
        with open(job.upload, "wb") as file:
            while remaining:
                block = self.rfile.read(min(BLOCK, remaining))
                if not block:
                    break
                file.write(block)
                remaining -= len(block)
        if remaining:
            shutil.rmtree(job.folder, ignore_errors=True)
            self.close_connection = True
            return self._error(400, "the upload ended early")
        try:
            app.check_audio(job.upload)
        except MssError as exc:
            shutil.rmtree(job.folder, ignore_errors=True)
            message = " ".join(str(exc).split()).replace(str(job.upload), job.name)  # not the server's folders
            return self._error(415, f"not audio this server can read: {message}")
        if not app.submit(job):
            return self._error(429, f"{app.queue_size} songs are already waiting or being separated; try again "
                                    "when one is done")
        return self._json(202, {"id": job.id})


def make_server(app: SeparationApp, host: str = "127.0.0.1", port: int = 8000,
                verbose: bool = False) -> ThreadingHTTPServer:
    """An HTTP server for `app` on host:port (port 0: a free one, `server.server_address[1]`)."""
    handler = type("AppHandler", (Handler,), {"app": app})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.verbose = verbose
    return server


def serve(app: SeparationApp, server: ThreadingHTTPServer) -> None:
    """Serve until interrupted; then stop the worker and remove the jobs' files."""
    try:
        server.serve_forever()
    finally:
        server.server_close()
        app.close()


__all__ = ["DEFAULT_MAX_UPLOAD_MB", "DEFAULT_QUEUE", "Job", "SeparationApp", "make_server", "serve"]
