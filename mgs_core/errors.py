"""The one exception type for problems a user can cause and fix.

CLIs catch `MgsError`, print its message and exit non-zero without a traceback, so every
message must say what went wrong *and* what to do about it. Standard library only: the server
and the export toolchain import it too.
"""


class MgsError(Exception):
    """A problem the user can fix (bad config, missing model, unreachable broker...)."""


class ConfigError(MgsError):
    """A config file or value is invalid; the message names the key, the value and the reason."""


class MessageError(MgsError):
    """An MQTT topic or payload does not follow the wire contract in `mgs_core.messages`."""
