"""Time as the core sees it: injected, so tests can move it."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Returns the current POSIX time in seconds."""

system_clock: Clock = time.time
