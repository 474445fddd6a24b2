"""Hypothesis settings for the fuzz tests, chosen by MGS_FUZZ_PROFILE.

`make test` runs the default profile: 100 cases per parser test, and 10 walks over every route
for the web test (one request per route and method each). The `long` profile runs 10,000 cases
per parser test and 200 walks (over 10,000 requests); docs/reliability.md has the command. No
example database is written: a failure prints the failing input and the `@reproduce_failure`
line to paste.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_ENV = "MGS_FUZZ_PROFILE"
_COMMON = {
    "deadline": None,
    "database": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

settings.register_profile("default", max_examples=100, **_COMMON)
settings.register_profile("long", max_examples=10_000, **_COMMON)
PROFILE = os.environ.get(PROFILE_ENV, "default")
settings.load_profile(PROFILE)
WEB_WALKS = {"default": 10, "long": 200}[PROFILE]
