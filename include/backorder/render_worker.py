"""Rendering in a process of its own, so that a big batch's SMTP session never waits for the GIL.

Rendering is CPU work; the SMTP session is a chain of short waits for the server. In one
process, a rendering thread holds the GIL for up to `sys.getswitchinterval()` (5 ms) each time
the session's reply arrives: measured here, that cut one connection from about 1,500 to about
300 messages per second. So a big batch is rendered by a child process (`python -m
include.backorder.render_worker`) that the send stage feeds with notifications and reads finished
messages from, ahead of the session, over its stdin and stdout (length-prefixed pickles between
two processes of ours). A subprocess rather than `multiprocessing`: it also works inside
daemonic worker processes (Celery's prefork pool), which may not start multiprocessing children.
"""

from __future__ import annotations

import gc
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from include.backorder.config import Branding
from include.backorder.mime import Email
from include.backorder.render import Notification, Renderer
from include.backorder.unsubscribe import Unsubscribe

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 128  # notifications per message to the worker
_HEADER = struct.Struct("!Q")
END = "end"  # after the last chunk of a render() call, and its echo


@dataclass(frozen=True)
class Setup:
    """What the worker needs to render like the send stage would."""

    branding: Branding
    from_email: str
    sender_domain: str
    unsubscribe: Unsubscribe


@dataclass(frozen=True)
class RenderResult:
    """What rendering one notification gave: its message, or why it cannot be rendered."""

    key: int  # the notification's id
    message: Email | None
    error: str | None  # why it could not be rendered
    seconds: float


def write_frame(stream: IO[bytes], value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def read_frame(stream: IO[bytes]) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("the other side closed the pipe")
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other side closed the pipe mid-frame")
    return pickle.loads(data)


def render_chunk(renderer: Renderer, setup: Setup, chunk: list[tuple[int, Notification]]) -> list[RenderResult]:
    from jinja2 import TemplateError

    out = []
    for key, notification in chunk:
        started = time.perf_counter()
        try:
            msg = renderer.render(notification, setup.from_email, setup.sender_domain, None, setup.unsubscribe)
            out.append(RenderResult(key, msg, None, time.perf_counter() - started))
        except (ValueError, TypeError, LookupError, TemplateError) as exc:
            out.append(RenderResult(key, None, repr(exc), time.perf_counter() - started))
    return out


def serve(stdin: IO[bytes], stdout: IO[bytes]) -> None:
    """The worker: a Setup, then chunks of (key, Notification), each answered with its RenderResults, and END
    (answered with END) after the chunks of one `render` call; None ends it."""
    setup: Setup = read_frame(stdin)
    renderer = Renderer(setup.branding)
    gc.freeze()  # the templates, Babel's and ftfy's data live as long as the worker: no collector passes over them
    write_frame(stdout, "ready")
    while (chunk := read_frame(stdin)) is not None:
        write_frame(stdout, END if chunk == END else render_chunk(renderer, setup, chunk))


class RenderWorker:
    """`with RenderWorker(setup) as worker: for result in worker.render(items): ...` (in order)."""

    def __init__(self, setup: Setup) -> None:
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "include.backorder.render_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin, self._stdout = self.process.stdin, self.process.stdout
        write_frame(self._stdin, setup)
        if read_frame(self._stdout) != "ready":
            raise RuntimeError("the render worker did not start")
        self._error: BaseException | None = None
        self._broken = False  # a render() was left part-way: kill the worker rather than wait for it

    def _feed(
        self, items: Iterable[tuple[int, Notification]], slots: threading.Semaphore, stop: threading.Event
    ) -> None:
        """Write the items to the worker in chunks, each once a slot is free, then END."""

        def send(chunk: list[tuple[int, Notification]]) -> None:
            slots.acquire()
            if not stop.is_set():
                write_frame(self._stdin, chunk)

        try:
            chunk: list[tuple[int, Notification]] = []
            for item in items:
                chunk.append(item)
                if len(chunk) == CHUNK:
                    send(chunk)
                    chunk = []
            if chunk:
                send(chunk)
        except BaseException as exc:  # raised again by the reading side, after END
            self._error = exc
        finally:
            if not stop.is_set():  # unless the reader gave up: END, so that it stops reading
                write_frame(self._stdin, END)

    def render(self, items: Iterable[tuple[int, Notification]], ahead: int = 4) -> Iterator[RenderResult]:
        """Render results for the items, in order; at most `ahead` chunks are rendered before they are read."""
        slots, stop = threading.Semaphore(ahead), threading.Event()
        feeder = threading.Thread(target=self._feed, args=(items, slots, stop), name="render-feeder", daemon=True)
        feeder.start()
        finished = False
        try:
            while True:
                try:
                    frame = read_frame(self._stdout)
                except EOFError:
                    raise RuntimeError(f"the render worker ended (exit code {self.process.poll()})") from None
                if frame == END:
                    finished = True
                    break
                slots.release()
                yield from frame
        finally:
            if not finished:  # the reader gave up (an error, or the caller stopped): the worker goes
                self._broken = True
                stop.set()
                slots.release(ahead + 1)
            feeder.join(timeout=10)
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._broken:
            self.process.kill()
        try:
            if self.process.poll() is None:
                write_frame(self._stdin, None)
                self._stdin.close()
                self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> RenderWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    # Through the module's own name, so that what is pickled is `include.backorder.render_worker.RenderResult`,
    # not `__main__.RenderResult`.
    from include.backorder import render_worker

    render_worker.serve(sys.stdin.buffer, sys.stdout.buffer)
