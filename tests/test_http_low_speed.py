"""The low-speed rule on a session's sockets (``kanipy.http.LowSpeed``), against a tiny
HTTP server on 127.0.0.1 that answers as each test tells it: trickling, thinking, or
sending at once to a client that reads slowly. Only a trickle is a stall."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from kanipy.http import LowSpeed, low_speed_stall, make_session

BODY = b"x" * 200_000
Answer = Callable[[socket.socket], None]


def _head(length: int) -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
            .encode())


@pytest.fixture
def server() -> Iterator[Callable[[Answer], str]]:
    """``serve(answer)`` starts a one-request server calling ``answer(conn)``; its URL."""
    listeners: list[socket.socket] = []

    def serve(answer: Answer) -> str:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listeners.append(listener)

        def run() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                try:
                    answer(conn)
                except OSError:
                    pass
        threading.Thread(target=run, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}/"
    yield serve
    for listener in listeners:
        listener.close()


def session() -> requests.Session:
    return make_session(low_speed=LowSpeed(limit=1024, window=1.0))


def test_a_trickled_body_is_a_stall(server: Callable[[Answer], str]) -> None:
    def trickle(conn: socket.socket) -> None:
        conn.sendall(_head(len(BODY)))
        for _ in range(100):
            conn.sendall(b"x")
            time.sleep(0.05)

    with pytest.raises(requests.RequestException) as info:
        session().get(server(trickle), timeout=(5, 30)).content  # noqa: B018
    stall = low_speed_stall(info.value)
    assert stall is not None, repr(info.value)
    assert "under the low-speed limit of 1024 bytes per 1s" in str(stall)


def test_silence_before_the_answer_is_left_to_the_socket_timeout(
        server: Callable[[Answer], str]) -> None:
    # A registry committing a large upload says nothing for a while, then answers.
    def think(conn: socket.socket) -> None:
        time.sleep(2.5)
        conn.sendall(_head(len(BODY)) + BODY)

    assert session().get(server(think), timeout=(5, 30)).content == BODY


def test_a_slow_reader_is_not_a_stall(server: Callable[[Answer], str]) -> None:
    def at_once(conn: socket.socket) -> None:
        conn.sendall(_head(len(BODY)) + BODY)

    resp = session().get(server(at_once), stream=True, timeout=(5, 30))
    got = b""
    for chunk in resp.iter_content(50_000):
        got += chunk
        time.sleep(0.6)  # four pauses: 2.4 s between reads, more than the window
    assert got == BODY
