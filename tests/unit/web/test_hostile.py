"""Hostile input never makes a 5xx: every protected route of the real app, without a token
or with a header that is not ASCII, answers 401 — and deeply nested JSON is a 400."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from campaignd.config.load import load_root
from campaignd.stats import DeliveryStats
from campaignd.web.api import make_app
from campaignd.web.security import PROTECTED, errors
from tests.rootfiles import make_root


class FakeView:
    """Only what the middlewares read: a config and a token; anything else is a test bug."""

    def __init__(self, root: Path) -> None:
        self.config = load_root(root, env={}).config
        self.token: str | None = "s3cret"
        self.stats = DeliveryStats()
        self.store = None
        self.feedback = None
        self.signer = None

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a rejected request reached the view: {name}")


HOSTILE_AUTH = [
    None,
    "Bearer",
    "Bearer s3crét",
    "Bearer \udcff\udcfe",
    "Bearer " + "x" * 4000,
    "Basic czNjcmV0",
    "bearer  ",
]


async def raw_status(client: TestClient, method: str, path: str, auth: bytes) -> int:
    """The status for a request written byte by byte (the client library would refuse it)."""
    import asyncio

    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n".encode()
        + b"Authorization: "
        + auth
        + b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


def concrete(path: str) -> str:
    return path.replace("{id}", "news").replace("{tail:.*}", "x").replace("{provider}", "mailgun")


async def test_every_protected_route_refuses_hostile_authorization(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(FakeView(make_root(tmp_path)))  # type: ignore[arg-type]
    routes = sorted(
        {
            (r.method, concrete(r.resource.canonical))
            for r in app.router.routes()
            if r.resource is not None
            and r.resource.canonical.startswith(PROTECTED)
            and r.method != "HEAD"
        }
    )
    assert len(routes) >= 10, routes
    caplog.set_level(logging.DEBUG)
    async with TestClient(TestServer(app)) as client:
        for method, path in routes:
            for value in HOSTILE_AUTH:
                headers = {} if value is None else {"Authorization": value}
                resp = await client.request(method, path, headers=headers, json={"a": 1})
                assert resp.status == 401, (method, path, value, resp.status)
            # raw bytes that are not UTF-8, as a hostile client sends them
            assert await raw_status(client, method, path, b"Bearer \xff\xfe s3cret") == 401
    assert "Traceback" not in caplog.text


async def test_deeply_nested_json_is_a_400_not_a_500(caplog: pytest.LogCaptureFixture) -> None:
    import json

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"got": len(await request.json())})

    app = web.Application(middlewares=[errors])
    app.router.add_post("/x", handler)
    body = "[" * 100_000 + "]" * 100_000
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/x", data=body, headers={"Content-Type": "application/json"})
        assert resp.status == 400, await resp.text()
        assert "RecursionError" in (await resp.json())["error"]
        resp = await client.post(
            "/x", data=json.dumps([1]), headers={"Content-Type": "application/json"}
        )
        assert resp.status == 200
    assert "Traceback" not in caplog.text
