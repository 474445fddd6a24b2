"""The pieces every role shares: errors, TOML config loading, CLI helpers, the MQTT wire contract
and the model manifest. Standard library only (plus tomllib); it imports none of the roles, and
device/, server/, export/ and models/ all depend on it."""
