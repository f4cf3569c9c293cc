"""An InfluxDB 1.x with ``[http] auth-enabled = true`` and the users docs/deploy.md asks for."""

from __future__ import annotations

import httpx

from tests.services import InfluxDB

ADMIN = ("admin", "admin-secret")
WRITER = ("citygw_writer", "writer-secret")
READER = ("citygw_reader", "reader-secret")


class AuthInfluxDB(InfluxDB):
    """influxd with authentication on: an admin, and per database a writer and a reader."""

    def command(self) -> list[str]:
        command = super().command()
        conf = self.workdir / "influxdb.conf"
        conf.write_text(conf.read_text().replace("[http]\n", "[http]\n  auth-enabled = true\n"))
        return command

    def query(self, q: str, db: str | None = None) -> dict[str, object]:
        """As the admin (``create_users`` first)."""
        data = {"q": q, "epoch": "ms"} | ({"db": db} if db else {})
        resp = httpx.post(f"{self.url}/query", data=data, auth=ADMIN, timeout=30)
        resp.raise_for_status()
        result: dict[str, object] = resp.json()
        return result

    def create_users(self) -> None:
        """The admin (InfluxDB lets anyone create the first user, an admin), the writer and the reader."""
        statement = f"CREATE USER {ADMIN[0]} WITH PASSWORD '{ADMIN[1]}' WITH ALL PRIVILEGES"
        httpx.post(f"{self.url}/query", data={"q": statement}, timeout=30).raise_for_status()
        for user, password in (WRITER, READER):
            self.query(f"CREATE USER {user} WITH PASSWORD '{password}'")

    def grant(self, db: str) -> None:
        """WRITE on ``db`` to the writer, READ to the reader (the database must exist)."""
        self.query(f'GRANT WRITE ON "{db}" TO {WRITER[0]}')
        self.query(f'GRANT READ ON "{db}" TO {READER[0]}')

    def store_url(self, db: str, user: tuple[str, str]) -> str:
        return f"influxdb://{user[0]}:{user[1]}@127.0.0.1:{self.port}/{db}"
