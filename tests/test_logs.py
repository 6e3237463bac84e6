"""The request log of the real gunicorn service: one JSON line per request with the fields operators need, and
never a secret, a JWT or a linking URL in anything the process prints."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlsplit

import requests

from service.auth import signed_path
from tests.conftest import API_KEY, INTERNAL_TOKEN, SIGNING_SECRET
from tests.support.processes import wait_until

BEARER = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.")


def request_lines(log: str) -> list[dict]:
    lines = []
    for line in log.splitlines():
        if '"logger":"ayrshare_connect.request"' in line:
            lines.append(json.loads(line))  # the whole line is one JSON object
    return lines


def test_one_json_line_per_request_with_the_documented_fields(start_service, emulator, keypair):
    service = start_service(workers=2)
    link = service.url + signed_path("alice", SIGNING_SECRET, 300)

    cold = requests.get(link, headers={"X-Request-ID": "req-cold.1"}, allow_redirects=False, timeout=20)
    warm = requests.get(link, headers={"X-Request-ID": "req-warm.2", "Accept": "application/json"}, timeout=20)
    generated = requests.get(link, headers={"X-Request-ID": "not a sane id!"}, allow_redirects=False, timeout=20)
    unknown = requests.get(service.url + "/connect/nobody", headers={**BEARER, "X-Request-ID": "req-404"}, timeout=20)
    forged_link = link[:-1] + ("1" if link[-1] == "0" else "0")  # one character of the signature changed
    forged = requests.get(forged_link, headers={"X-Request-ID": "req-forged"}, timeout=20)
    assert [cold.status_code, warm.status_code, generated.status_code] == [302, 200, 302]
    assert unknown.status_code == 404 and forged.status_code in (401, 403)
    location = cold.headers["Location"]
    token = parse_qs(urlsplit(location).query)["session"][0]  # the ayr_ls_ token of the default flow
    signature = parse_qs(urlsplit(link).query)["signature"][0]

    assert service.stop() == 0  # SIGTERM; everything the workers printed is now in the log
    log = service.log()
    by_id: dict[str, list[dict]] = {}
    for line in request_lines(log):
        by_id.setdefault(line["request_id"], []).append(line)

    # Honoured and echoed when sane; replaced by a generated id (echoed too) when not.
    assert cold.headers["X-Request-ID"] == "req-cold.1"
    new_id = generated.headers["X-Request-ID"]
    assert new_id != "not a sane id!" and re.fullmatch(r"[0-9a-f]{32}", new_id)
    for request_id in ("req-cold.1", "req-warm.2", new_id, "req-404", "req-forged"):
        assert len(by_id.get(request_id, [])) == 1, f"expected exactly one log line for {request_id}"

    first, second = by_id["req-cold.1"][0], by_id["req-warm.2"][0]
    for line in (first, second):
        assert line["route"] == "/connect/<user>"
        assert line["method"] == "GET"
        assert line["user"] == "alice"
        assert line["auth"] == "signed"
        assert line["link_flow"] == "session"
        assert isinstance(line["latency_ms"], int | float) and line["latency_ms"] >= 0
    assert (first["status"], first["cache"]) == (302, "upstream")
    assert isinstance(first["upstream_ms"], int | float) and first["upstream_ms"] >= 0
    assert (second["status"], second["cache"], second["upstream_ms"]) == (200, "cache", None)
    assert by_id["req-404"][0]["status"] == 404
    assert by_id["req-404"][0]["cache"] is None and by_id["req-404"][0]["link_flow"] is None
    assert by_id["req-404"][0]["auth"] is None  # `auth` names how a served link was admitted; no link here
    assert by_id["req-forged"][0]["auth"] is None
    assert by_id["req-forged"][0]["status"] == forged.status_code

    # Nothing secret anywhere in the process output: not in request lines, not in warnings, not at shutdown.
    private_key_body = "".join(keypair["private_pem"].splitlines()[1:-1])
    forbidden = {
        "API key": API_KEY,
        "signing secret": SIGNING_SECRET,
        "internal token": INTERNAL_TOKEN,
        "link signature": signature,
        "linking URL": location,
        "JWT": token,
        "private key": private_key_body[:64],
    }
    flat = log.replace("\n", "")
    for name, secret in forbidden.items():
        assert secret not in flat, f"the {name} appears in the service's output"
    assert not JWT_SHAPE.search(log), "something shaped like a JWT appears in the service's output"
    assert "expires=" not in log and "signature=" not in log, "a query string reached the log"


def test_every_field_of_a_record_is_scrubbed(app, capsys):
    """The redactor is the last line of defence: secrets, JWT-shaped text and signatures go from any field, nested
    values included, and plain numbers stay numbers."""
    import logging

    capsys.readouterr()
    logging.getLogger("ayrshare_connect.request").info(
        "request",
        extra={
            "request_id": "r1",
            "path": f"/connect/x?signature=abc123&key={API_KEY}",
            "user": "eyJhbGciOi.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
            "status": 302,
            "upstream_ms": None,
            "extra": {"nested": INTERNAL_TOKEN},
        },
    )
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert list(line)[:4] == ["ts", "level", "logger", "msg"]
    assert line["logger"] == "ayrshare_connect.request" and line["level"] == "info" and line["msg"] == "request"
    assert line["path"] == "/connect/x?signature=[redacted]&key=[redacted]"
    assert line["user"] == "[redacted-jwt]"
    assert line["status"] == 302 and line["upstream_ms"] is None
    assert line["extra"] == '{"nested":"[redacted]"}'
    assert INTERNAL_TOKEN not in json.dumps(line) and API_KEY not in json.dumps(line)


def test_an_unreachable_redis_is_logged_once_at_start_with_host_and_port_and_no_password(start_service):
    from tests.support.processes import free_port

    port = free_port()
    service = start_service(workers=2, REDIS_URL=f"redis://:REDIS-PASSWORD-x1@127.0.0.1:{port}/0")
    at_start = [line for line in service.log().splitlines() if f"127.0.0.1:{port}" in line]
    assert len(at_start) == 1, service.log()
    assert "Redis" in at_start[0] and "does not answer" in at_start[0]
    for _ in range(5):  # requests that find the cache down do not repeat it
        requests.get(service.url + signed_path("alice", SIGNING_SECRET), allow_redirects=False, timeout=20)
    log = service.log()
    assert [line for line in log.splitlines() if f"127.0.0.1:{port}" in line] == at_start
    assert "REDIS-PASSWORD-x1" not in log


def _iso(ts: str):
    from datetime import datetime

    parsed = datetime.fromisoformat(ts)
    assert parsed.tzinfo is not None and ts.endswith("Z"), ts
    return parsed


def test_gunicorns_own_lines_are_json_like_the_services_with_iso_8601_timestamps(start_service):
    service = start_service(workers=2, GUNICORN_ACCESS_LOG="1")
    requests.get(service.url + "/healthz?signature=SIGNED-VALUE", timeout=5)
    wait_until(lambda: '"gunicorn.access"' in service.log(), 10, what="the access line")
    service.stop()
    lines = service.log().splitlines()
    entries = [json.loads(line) for line in lines]  # every line, gunicorn's and the service's
    for message in ("Starting gunicorn", "Listening at", "Booting worker with pid", "Handling signal"):
        entry = next(e for e in entries if e["msg"].startswith(message))
        assert entry["logger"] == "gunicorn.error" and entry["level"] == "info", entry
        assert list(entry)[:4] == ["ts", "level", "logger", "msg"]
    access = next(e for e in entries if e["logger"] == "gunicorn.access")
    assert access["path"] == "/healthz" and access["status"] == 200 and access["method"] == "GET"
    assert "SIGNED-VALUE" not in json.dumps(entries)
    for entry in entries:
        _iso(entry["ts"])
