"""Broker crash benchmark: what a kill -9 of Mosquitto loses of what it had acknowledged.

    .venv/bin/python bench/broker_crash.py [--messages 5000] [--payload 500]
                                           [--settings "autosave_interval 60" ...]

For each persistence setting (lines replacing ``autosave_interval 60`` of the shipped
deploy/mosquitto/mosquitto.conf), on a fresh broker: a collector's persistent session (MQTT 5,
session expiry for ever) subscribes and leaves, as while the store is down; an agent publishes
``--messages`` QoS 1 messages and counts the PUBACKs; Mosquitto is killed with SIGKILL right
after the last PUBACK and restarted; the collector comes back and counts what its session still
holds. Prints one line per setting and a JSON object: acknowledged, delivered after the crash,
lost, and the agent's publish rate (the cost of saving more often).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.deploy.broker import SecuredMosquitto, Session  # noqa: E402

SHIPPED = "autosave_interval 60"
COLLECTOR, AGENT = "svc.collector-1", "depot-north-1"
SUBSCRIPTION = "$share/collectors/citygw/v1/+/telemetry"


class Broker(SecuredMosquitto):
    """The shipped configuration with its autosave line replaced."""

    def __init__(self, workdir: Path, users: list[str], settings: str) -> None:
        super().__init__(workdir, users)
        self.settings = settings

    def production_config(self) -> str:
        text = super().production_config()
        assert f"\n{SHIPPED}\n" in text, f"{self.config_file} no longer has {SHIPPED!r}"
        return text.replace(f"\n{SHIPPED}\n", f"\n{self.settings}\n")


def measure(settings: str, messages: int, payload_size: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="citygw-crash-") as folder:
        broker = Broker(Path(folder) / "mosquitto", [COLLECTOR, AGENT], settings)
        broker.start()
        try:
            collector = Session(broker, COLLECTOR, mqtt5=True, clean=False)
            collector.subscribe(SUBSCRIPTION)
            collector.close()
            agent = Session(broker, AGENT)
            filler = b"x" * max(0, payload_size - 8)
            started = time.monotonic()
            infos = [
                agent.client.publish(f"citygw/v1/{AGENT}/telemetry", b"%08d" % n + filler, qos=1)
                for n in range(messages)
            ]
            for info in infos:
                info.wait_for_publish(60)
            elapsed = time.monotonic() - started
            acknowledged = sum(info.is_published() for info in infos)
            agent.close()
            broker.kill()
            broker.start()
            collector = Session(broker, COLLECTOR, mqtt5=True, clean=False)
            delivered: set[bytes] = set()
            while True:
                try:
                    delivered.add(collector.received(timeout=3)[1][:8])
                except queue.Empty:
                    break
            return {
                "settings": settings,
                "acknowledged": acknowledged,
                "delivered_after_crash": len(delivered),
                "lost": acknowledged - len(delivered),
                "publish_rate_per_s": round(messages / elapsed),
            }
        finally:
            broker.stop()


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--payload", type=int, default=500, help="bytes per message")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[
            SHIPPED,
            "autosave_interval 1",
            "autosave_on_changes true\nautosave_interval 100",
            "autosave_on_changes true\nautosave_interval 1",
        ],
        help="lines replacing the shipped autosave_interval 60 (\\n between lines)",
    )
    args = parser.parse_args()
    results = []
    for settings in args.settings:
        result = measure(settings.replace("\\n", "\n"), args.messages, args.payload)
        results.append(result)
        print(
            f"{result['settings']!r}: {result['acknowledged']} acknowledged, {result['lost']} lost"
            f" after kill -9, {result['publish_rate_per_s']} msg/s",
            flush=True,
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
