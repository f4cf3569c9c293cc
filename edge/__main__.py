"""``python -m edge --config agent.yaml``: run one edge agent until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from edge.agent import run_agent
from edge.config import AgentConfigError


async def _main(config: str) -> None:
    task = asyncio.current_task()
    assert task is not None
    # systemd stops with SIGTERM: shut down like Ctrl-C (say offline, close the journal).
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await run_agent(config)
    except asyncio.CancelledError:
        logging.getLogger("edge").info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge", description="CityGW edge agent")
    parser.add_argument("--config", required=True, help="agent YAML config")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_main(args.config))
    except AgentConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
