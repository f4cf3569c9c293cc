"""The TLS context of every CityGW MQTT client (agent, collector, API): one place, one behaviour.

Built anew for each connection, so a CA, certificate or key replaced on disk (a rotation) is
used at the next connect without a restart.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(
    ca_file: Path | str | None = None, cert_file: Path | str | None = None, key_file: Path | str | None = None
) -> ssl.SSLContext:
    """Verify the broker against ``ca_file`` (system CAs if None); present ``cert_file`` if given.

    Raises OSError (ssl.SSLError is one) naming nothing: callers add which setting it was.
    """
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context
