"""How far an upload bomb raises the API's memory at the default limits, beside a reference.

    python benchmarks/upload_bomb.py                  # a 2 GB bomb and a 900 MB one
    python benchmarks/upload_bomb.py --bomb-mb 4000

Starts ``noisefa serve --no-worker`` on the embedded default (a temporary home, every limit at
its default), uploads ``np.savez_compressed`` archives of float32 zeros, and prints for each
the answer, the archive's size and how far the server's peak resident memory (``VmHWM``,
reset before each upload) rose above its resident set of just before:

- **bomb**: declares more than ``max_upload_uncompressed_bytes`` (1 GB): refused from the
  zip directory alone;
- **packed**: declares less, but packs past ``max_upload_compression_ratio`` (200×);
- **reference**: the same packed archive read whole with the engine's reader (``np.load`` of
  each array, what the API did before), in a child process: its peak memory.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from noisefa.commands.processes import stop_process
from noisefa.testing.embedded import start_server
from noisefa.testing.memory import memory_of, reset_peak, zeros_npz

MB = 1_000_000
REFERENCE = """
import resource, sys
from pathlib import Path
from noisefa.engine.npz import read_npz
read_npz(Path(sys.argv[1]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def upload(http: httpx.Client, path: Path) -> httpx.Response:
    with path.open("rb") as handle:
        return http.post("/v1/datasets", files={"file": ("set.npz", handle)})


def measured(pid: int, http: httpx.Client, path: Path) -> str:
    """One upload's answer, time and the server's peak growth, as a line."""
    reset_peak(pid)
    before = memory_of(pid).rss
    started = time.perf_counter()
    response = upload(http, path)
    seconds = time.perf_counter() - started
    growth = memory_of(pid).peak - before
    field = response.json().get("errors", [{}])[0].get("field", "-")
    return (
        f"{response.status_code} {field:<32} archive {path.stat().st_size / MB:7.2f} MB  "
        f"{seconds:5.2f} s  API peak +{growth / MB:6.1f} MB (resident {before / MB:.0f} MB)"
    )


def reference_peak(path: Path) -> int:
    """Peak resident bytes of a fresh process reading ``path`` whole with the engine."""
    done = subprocess.run(
        [sys.executable, "-c", REFERENCE, str(path)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bomb-mb", type=int, default=2000, help="Unpacked size of the bomb.")
    parser.add_argument("--packed-mb", type=int, default=900, help="Unpacked size, packed case.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="upload-bomb-") as folder:
        root = Path(folder)
        bomb = zeros_npz(root / "bomb.npz", args.bomb_mb * MB)
        packed = zeros_npz(root / "packed.npz", args.packed_mb * MB)
        server = start_server(root / "home", root / "serve.log", args=["--no-worker"])
        try:
            key = (server.home / "api_key").read_text().strip()
            headers = {"Authorization": f"Bearer {key}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=600) as http:
                warm = zeros_npz(root / "warm.npz", MB)
                assert upload(http, warm).status_code == 201, "a valid upload was refused"
                pid = server.process.pid
                print(f"bomb      {args.bomb_mb:5d} MB  {measured(pid, http, bomb)}")
                print(f"packed    {args.packed_mb:5d} MB  {measured(pid, http, packed)}")
        finally:
            stop_process(server.process, sig=signal.SIGINT, timeout_s=30)
        peak = reference_peak(packed)
        print(f"reference {args.packed_mb:5d} MB  np.load of every array: peak {peak / MB:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
