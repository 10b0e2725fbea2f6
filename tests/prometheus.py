"""A real Prometheus (Debian's package) for tests: temporary TSDB, loopback only, queried over HTTP."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.parts import free_port, missing, stop


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant-query result vector (or matrix) for `promql`."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no data for {promql} in {timeout:g} s"
            time.sleep(0.25)


@contextmanager
def prometheus(
    tmp_path: Path, scrape: Sequence[str] = (), remote_write: bool = False
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    if binary is None:
        missing("prometheus not installed (Debian package prometheus; ./scripts/test installs it)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    jobs = (
        [
            {
                "job_name": "otelcol",
                "scrape_interval": "1s",
                "honor_labels": True,
                "static_configs": [{"targets": list(scrape)}],
            }
        ]
        if scrape
        else []
    )
    config.write_text(
        json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": jobs})
    )
    log = tmp_path / "prometheus.log"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    if remote_write:
        args.append("--web.enable-remote-write-receiver")
    with log.open("wb") as log_file:
        process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    running = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{running.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"prometheus not ready in 30 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        yield running
    finally:
        stop(process)
