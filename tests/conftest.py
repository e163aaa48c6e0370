from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# "dev" keeps the edit-test loop quick; "ci" tries more examples, derandomized
# so that a failure seen in CI reproduces from the same run.
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
