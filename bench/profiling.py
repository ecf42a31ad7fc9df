"""Optional profiling of the server with py-spy during a measured window."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

PROFILE_FORMATS = {".svg": "flamegraph", ".txt": "raw", ".json": "speedscope"}
PROFILER_TIMEOUT = 10.0


def start_profiler(
    pid: int, duration: float, output: Path | None
) -> subprocess.Popen[bytes] | None:
    if output is None:
        return None
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        print("  --profile: py-spy is not installed; skipping the profile", file=sys.stderr)
        return None
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(duration)))]
    command += ["--rate", "200", "--nonblocking", "--output", str(output)]
    command += ["--format", PROFILE_FORMATS[output.suffix]]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def finish_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is None:
        return
    try:
        _, stderr = await asyncio.to_thread(profiler.communicate, timeout=PROFILER_TIMEOUT)
    except subprocess.TimeoutExpired:
        profiler.kill()
        profiler.wait()
        print("  --profile: py-spy did not finish; profile skipped", file=sys.stderr)
        return
    if profiler.returncode != 0:
        print(f"  --profile: py-spy failed: {stderr.decode(errors='replace')}", file=sys.stderr)
