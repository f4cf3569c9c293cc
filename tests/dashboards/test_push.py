"""``citygw dashboards push`` against a fake Grafana on loopback.

Grafana cannot be installed on these machines, so this server is a fake: it implements only
the two endpoints the push uses (GET /api/dashboards/uid/<uid>, POST /api/dashboards/db) the
way Grafana documents them, including the bearer token check and the version counter. What
is tested is our diff and idempotence logic and the requests grafana-client sends.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaUnauthorizedError

from citygw.cli import main
from dashboards import build_all
from dashboards.push import Action, push

TOKEN = "glsa_test_token"
VIEWER_TOKEN = "glsa_viewer_token"  # a service account without the Editor role: reads, cannot save


class FakeGrafana:
    def __init__(self) -> None:
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.saves: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self, *, save: bool = False) -> bool:
                token = self.headers.get("Authorization")
                if token == f"Bearer {TOKEN}":
                    return True
                if token == f"Bearer {VIEWER_TOKEN}":
                    if not save:
                        return True
                    self._answer(403, {"message": "Access denied to save dashboard"})
                    return False
                self._answer(401, {"message": "Unauthorized"})
                return False

            def do_GET(self) -> None:
                prefix = "/api/dashboards/uid/"
                if not self._authorised():
                    return
                if not self.path.startswith(prefix):
                    self._answer(404, {"message": "Not found"})
                    return
                board = fake.dashboards.get(self.path[len(prefix) :])
                if board is None:
                    self._answer(404, {"message": "Dashboard not found"})
                    return
                self._answer(200, {"dashboard": board, "meta": {"folderUid": ""}})

            def do_POST(self) -> None:
                if not self._authorised(save=True):
                    return
                if self.path != "/api/dashboards/db":
                    self._answer(404, {"message": "Not found"})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                board = body["dashboard"]
                old = fake.dashboards.get(board["uid"])
                if old is not None and not body.get("overwrite"):
                    self._answer(412, {"status": "version-mismatch"})
                    return
                version = 1 if old is None else old["version"] + 1
                fake.dashboards[board["uid"]] = board | {"id": 7, "version": version}
                fake.saves.append(board["uid"])
                self._answer(200, {"status": "success", "uid": board["uid"], "version": version})

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def api(self, token: str = TOKEN) -> GrafanaApi:
        api: GrafanaApi = GrafanaApi.from_url(self.url, credential=token)
        return api


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    fake = FakeGrafana()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def test_push_creates_then_changes_nothing(grafana: FakeGrafana) -> None:
    boards = build_all()
    first = push(grafana.api(), boards)
    assert {c.uid: c.action for c in first} == dict.fromkeys(boards, Action.CREATE)
    assert sorted(grafana.saves) == sorted(boards)
    again = push(grafana.api(), boards)
    assert {c.action for c in again} == {Action.UNCHANGED}
    assert len(grafana.saves) == len(boards)  # idempotent: nothing written the second time


def test_dry_run_shows_the_diff_and_writes_nothing(grafana: FakeGrafana) -> None:
    boards = build_all()
    push(grafana.api(), boards)
    grafana.saves.clear()
    edited = grafana.dashboards["citygw-water"]
    edited["title"] = "Water (edited by hand)"
    edited["version"] += 1
    changes = push(grafana.api(), boards, dry_run=True)
    assert {c.uid: c.action for c in changes if c.action is not Action.UNCHANGED} == {
        "citygw-water": Action.UPDATE
    }
    (water,) = [c for c in changes if c.uid == "citygw-water"]
    assert '-  "title": "Water (edited by hand)",\n+  "title": "Water",\n' in water.diff
    assert grafana.saves == []
    push(grafana.api(), boards)
    assert grafana.saves == ["citygw-water"]
    assert grafana.dashboards["citygw-water"]["title"] == "Water"


def test_the_command_reads_url_and_token_from_the_environment(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CITYGW_GRAFANA_URL", grafana.url)
    monkeypatch.setenv("CITYGW_GRAFANA_TOKEN", TOKEN)
    assert main(["dashboards", "push", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would create: citygw-air-quality (Air quality)" in out
    assert '+  "uid": "citygw-air-quality"\n' in out
    assert grafana.saves == []
    assert main(["dashboards", "push"]) == 0
    assert len(grafana.saves) == len(build_all())
    assert "unchanged: citygw-transport" in (main(["dashboards", "push"]), capsys.readouterr().out)[1]


def test_a_wrong_token_is_refused(grafana: FakeGrafana) -> None:
    with pytest.raises(GrafanaUnauthorizedError):
        push(grafana.api("wrong"), build_all())
    assert grafana.saves == []


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("wrong", "HTTP 401 Unauthorized: the token was refused; set CITYGW_GRAFANA_TOKEN"),
        (
            VIEWER_TOKEN,
            "Client Error 403: Access denied to save dashboard: "
            "the token's service account needs the Editor role",
        ),
    ],
)
def test_a_refused_token_is_one_line_and_exit_2(
    grafana: FakeGrafana,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    token: str,
    why: str,
) -> None:
    monkeypatch.setenv("CITYGW_GRAFANA_URL", grafana.url)
    monkeypatch.setenv("CITYGW_GRAFANA_TOKEN", token)
    assert main(["dashboards", "push"]) == 2
    err = capsys.readouterr().err
    assert f"citygw: Grafana at {grafana.url}: {why}" in err
    assert "Traceback" not in err
    assert grafana.saves == []


def test_an_unreachable_grafana_is_one_line_and_exit_75(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.services import free_port

    port = free_port()
    monkeypatch.setenv("CITYGW_GRAFANA_URL", f"http://admin:s3cret@127.0.0.1:{port}")
    monkeypatch.setenv("CITYGW_GRAFANA_TOKEN", TOKEN)
    assert main(["dashboards", "push", "--dry-run"]) == 75
    err = capsys.readouterr().err
    assert f"citygw: Grafana at http://admin:***@127.0.0.1:{port}: [Errno 111] Connection refused" in err
    assert "s3cret" not in err
    assert "Traceback" not in err


def test_a_grafana_url_without_a_scheme_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CITYGW_GRAFANA_URL", "grafana.city.example:3000")
    monkeypatch.setenv("CITYGW_GRAFANA_TOKEN", TOKEN)
    assert main(["dashboards", "push"]) == 2
    err = capsys.readouterr().err
    assert "citygw: CITYGW_GRAFANA_URL='grafana.city.example:3000' is not an http(s) URL" in err
    assert "e.g. https://grafana.city.example" in err
    assert "Traceback" not in err
