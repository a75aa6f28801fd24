"""A CPU Space, tested as a Space runs it (opt-in: ``ROUTERDC_SPACE_TEST=1``; a few minutes).

A copy of the repository alone (its tracked and untracked-but-not-ignored files: no venv, no
data, no cache), a fresh venv with ``pip install -r requirements.txt`` (less the PyTorch index
line, as scripts/setup.sh drops it: the torch pin resolves locally), then ``python app.py`` with
an empty home. The data directory is empty, so the app downloads the score data from a local
127.0.0.1 server serving a copy of the data in the official repository's layout. A query is
routed through gradio_client while and after the data arrive. Timings are printed (``-s``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fetch_support import FileServer, official_layout
from tests.serving_support import free_port

pytestmark = [pytest.mark.space, pytest.mark.skipif(os.environ.get("ROUTERDC_SPACE_TEST") != "1",
                                                    reason="opt-in: set ROUTERDC_SPACE_TEST=1 (fresh venv + app.py)")]
ROOT = Path(__file__).resolve().parents[1]
QUERY = "Write a python function that returns the n-th Fibonacci number."


def _copy_repository(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    return dest


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"app.py exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"app.py did not serve {url} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def test_space_installs_fetches_the_data_and_routes(data_dir, tmp_path):
    from gradio_client import Client

    from routerdc.data.fetch import load_manifest

    space = tmp_path / "space"
    repo = _copy_repository(space / "app")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(space / "venv")], check=True)
    reqs = space / "requirements-space.txt"
    reqs.write_text("".join(line for line in (repo / "requirements.txt").read_text().splitlines(keepends=True)
                            if not line.startswith("--extra-index-url")))
    py = space / "venv" / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(reqs)], check=True, timeout=1500)
    install_s = time.perf_counter() - t0

    mirror = official_layout(data_dir, tmp_path / "mirror", [f.path for f in load_manifest()])
    port = free_port()
    home = space / "home"
    home.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "ROUTERDC_PORT": str(port), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = space / "app.log"
    with FileServer(mirror) as srv, log.open("w") as out:
        env["ROUTERDC_DATA_URL"] = srv.url
        t1 = time.perf_counter()
        proc = subprocess.Popen([str(py), "app.py"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            _wait_http(url, proc, log, 600)
            serve_s = time.perf_counter() - t1
            client = Client(url, verbose=False)
            t2 = time.perf_counter()
            result = client.predict(QUERY, 1.0, api_name="/route")[7]
            first_route_s = time.perf_counter() - t2
            assert result["llm"] in result["probs"] and abs(sum(result["probs"].values()) - 1) < 1e-5
            deadline = time.monotonic() + 300
            while "Data download**: done" not in (md := client.predict(api_name="/status")):
                assert "Data download**: failed" not in md, md
                assert time.monotonic() < deadline, md
                time.sleep(1)
            data_s = time.perf_counter() - t1
            m = re.search(r"\*\*Data\*\*: (\d+) score sets", md)
            assert m and int(m[1]) >= 19, md  # every shipped file loaded (RouterBench's hold several tasks)
            # The data are there: the shipped files of the app, fetched into ../shared/data beside the app.
            assert not [f for f in load_manifest() if not (space / "shared" / "data" / f.path).is_file()]
            after = client.predict(QUERY, 1.0, api_name="/route")
            assert after[7]["llm"] == result["llm"]
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"\n[space] pip install -r requirements.txt: {install_s:.0f} s; app.py served after {serve_s:.1f} s; "
          f"first route {first_route_s:.2f} s; score data downloaded and loaded {data_s:.1f} s after start")
    print(md)
