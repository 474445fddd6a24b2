"""The connection to the MQTT broker, one definition for every role.

The device's `[mqtt]` and the server's `[ingest]` sections both extend `BrokerConfig`, so a broker
feature (a password file, a client certificate, MQTT 3.1.1) works the same on both sides, and
`make_client` is the only place a paho client is configured from it. paho is imported inside
`make_client`: mgs_core stays importable where paho is not installed.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from mgs_core.errors import ConfigError
from mgs_core.messages import validate_prefix
from mgs_core.tomlconfig import Check, Length, Range, existing_file, fail, section_of

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt


@dataclass(frozen=True)
class TlsConfig:
    """The `tls` table of a broker section; its keys are named from the section that holds it."""

    enabled: bool = field(default=False, metadata={"doc": "connect with TLS (use port 8883 on the broker)"})
    ca: Annotated[Path | None, Check(existing_file)] = field(
        default=None, metadata={"doc": "CA certificate file; empty = the system's CAs"}
    )
    cert: Annotated[Path | None, Check(existing_file)] = field(
        default=None, metadata={"doc": "client certificate file (mutual TLS)"}
    )
    key: Annotated[Path | None, Check(existing_file)] = field(
        default=None, metadata={"doc": "client private key file (mutual TLS)"}
    )
    insecure: bool = field(default=False, metadata={"doc": "skip the broker host name check (testing only)"})

    def check(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise fail("cert", str(self.cert), "set both cert and key for a client certificate, or neither")


@dataclass(frozen=True)
class BrokerConfig:
    """Where the broker is and how to log in; a role's section subclasses it and adds its own keys."""

    SECTION: ClassVar[str] = ""

    host: Annotated[str, Length(1)] = field(default="localhost", metadata={"doc": "broker host name or address"})
    port: Annotated[int, Range(1, 65535)] = field(default=1883, metadata={"doc": "broker port (1883 plain, 8883 TLS)"})
    prefix: Annotated[str, Check(validate_prefix)] = field(
        default="mgs", metadata={"doc": "first topic level of every topic"}
    )
    username: str = field(default="", metadata={"doc": "broker user name; empty = anonymous"})
    password: str = field(default="", metadata={"doc": "broker password (prefer password_env or password_file)"})
    password_env: str = field(default="", metadata={"doc": "name of an environment variable holding the password"})
    password_file: Path | None = field(default=None, metadata={"doc": "file whose first line is the password"})
    keepalive: Annotated[int, Range(5, 3600, unit="seconds")] = field(
        default=30,
        metadata={"doc": "seconds between keep-alive pings; the broker declares the client offline after 1.5x"},
    )
    client_id: str = field(default="", metadata={"doc": "MQTT client id"})
    protocol: Literal["5", "3.1.1"] = field(
        default="5",
        metadata={
            "doc": "MQTT version: 5 (the broker says why it refuses a publish) or 3.1.1 (for a broker without MQTT 5)"
        },
    )
    tls: TlsConfig = field(default_factory=TlsConfig)

    def check(self) -> None:
        if sum(bool(x) for x in (self.password, self.password_env, self.password_file)) > 1:
            raise fail("password", "***", "set only one of password, password_env, password_file")

    def resolve_password(self) -> str | None:
        """The password from wherever the config says it is; a missing source stops start-up."""
        section = section_of(type(self))
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    f"key '{section}.password_env' = {self.password_env!r}: that environment variable is not set"
                )
            return value
        if self.password_file is not None:
            try:
                return Path(self.password_file).read_text(encoding="utf-8").splitlines()[0]
            except (OSError, IndexError) as exc:
                raise ConfigError(
                    f"key '{section}.password_file' = '{self.password_file}': cannot read a password ({exc})"
                ) from None
        return self.password or None

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS settings as one context (paho uses it, and so does a connect diagnosis); None without TLS."""
        if not self.tls.enabled:
            return None
        tls = self.tls
        try:
            context = ssl.create_default_context(cafile=str(tls.ca) if tls.ca else None)
            if tls.cert is not None:
                context.load_cert_chain(str(tls.cert), str(tls.key))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"[{section_of(type(self))}.tls]: cannot load the certificates ({exc}); check ca, cert and key"
            ) from None
        return context


def make_client(
    config: BrokerConfig,
    client_id: str,
    tls_context: ssl.SSLContext | None = None,
    persistent: bool = False,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho client (callback API 2) with the protocol, login and TLS of `config`; not connected.

    `persistent` asks for a session the broker keeps across reconnects under MQTT 3.1.1 (under
    MQTT 5 that is a connect option). Pass `tls_context` when the caller keeps the context (to
    diagnose a failed connect); otherwise it is built from `config`.
    """
    import paho.mqtt.client as mqtt

    mqtt5 = config.protocol == "5"
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if mqtt5 else mqtt.MQTTv311,
        clean_session=None if mqtt5 else not persistent,
        manual_ack=manual_ack,
    )
    if config.username:
        client.username_pw_set(config.username, config.resolve_password())
    context = tls_context if tls_context is not None else config.tls_context()
    if context is not None:
        client.tls_set_context(context)
        client.tls_insecure_set(config.tls.insecure)
    return client
