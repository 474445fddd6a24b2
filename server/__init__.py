"""Central mgs-rack server: MQTT ingest, SQLite history, dashboard, REST API, logins."""
