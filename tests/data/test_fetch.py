"""``routerdc data fetch`` against a local HTTP server on 127.0.0.1 serving a copy of the data:
clean download, checksum mismatch refused, interrupted download resumed, server down."""

from __future__ import annotations

import socket

import pytest

from routerdc.cli.main import main
from routerdc.data.fetch import FetchError, RemoteFile, build_manifest, check, fetch, load_manifest, sha256_file
from tests.fetch_support import FileServer, official_layout

# Small files (about 1.1 MB in all), both families and both folders of each.
SMALL = ("routerdc/split2_model7/humaneval_test.json", "routerdc/split2_model7_cluster/humaneval_train.json",
         "routerdc/split2_model7/mbpp.json", "routerbench/routerbench_zs/winograde_test.csv")


@pytest.fixture
def small(data_dir):
    return tuple(f for f in load_manifest() if f.path in SMALL)


@pytest.fixture
def server(data_dir, tmp_path):
    with FileServer(official_layout(data_dir, tmp_path / "mirror", SMALL)) as srv:
        yield srv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_manifest_matches_the_shared_data(data_dir):
    files = load_manifest()
    assert len(files) == 27 and len({f.path for f in files}) == 27
    assert build_manifest(data_dir)["files"] == [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files]
    assert not check(data_dir)
    assert RemoteFile("routerbench/routerbench_zs/mbpp_test.csv", 1, "0" * 64).source == "datasets/routerbench_zs/mbpp_test.csv"


def test_clean_download(small, server, data_dir, tmp_path):
    dest = tmp_path / "data"
    seen = []
    rep = fetch(dest, url=server.url, files=small, progress=seen.append)
    assert sorted(rep.downloaded) == sorted(SMALL) and not rep.present
    for f in small:
        assert sha256_file(dest / f.path) == sha256_file(data_dir / f.path)
    assert not list(dest.rglob("*.part"))
    assert seen[-1].files_done == seen[-1].files_total == 4 and seen[-1].bytes_done == seen[-1].bytes_total
    assert {p for p, _ in server.behaviour.requests} == {"/datasets/" + p.split("/", 1)[1] for p in SMALL}
    # A second fetch verifies what is there and downloads nothing.
    server.behaviour.requests.clear()
    rep = fetch(dest, url=server.url, files=small)
    assert not rep.downloaded and len(rep.present) == 4 and not server.behaviour.requests


def test_checksum_mismatch_is_refused_and_nothing_kept(small, server, tmp_path):
    bad = "/datasets/split2_model7/mbpp.json"
    server.behaviour.corrupt.add(bad)
    dest = tmp_path / "data"
    with pytest.raises(FetchError, match="mbpp.json: checksum mismatch.*refused and deleted"):
        fetch(dest, url=server.url, files=small)
    assert not (dest / "routerdc/split2_model7/mbpp.json").exists()
    assert not list(dest.rglob("*.part"))
    kept = [f for f in small if (dest / f.path).exists()]  # the files before it stay, verified
    assert kept and not check(dest, kept)


def test_interrupted_download_resumes_with_range(small, server, tmp_path):
    f = next(x for x in small if x.path.endswith("winograde_test.csv"))
    url_path = "/datasets/routerbench_zs/winograde_test.csv"
    dest = tmp_path / "data"
    server.behaviour.cut_once[url_path] = f.size // 2
    with pytest.raises(FetchError, match="winograde_test.csv: download failed after 1 attempt"):
        fetch(dest, url=server.url, files=[f], retries=0)
    part = dest / (f.path + ".part")
    kept = part.stat().st_size
    assert 0 < kept <= f.size // 2 and not (dest / f.path).exists()
    rep = fetch(dest, url=server.url, files=[f], retries=0)  # a later run resumes the .part
    assert rep.downloaded == (f.path,) and rep.bytes == f.size - kept
    assert server.behaviour.requests[-1] == (url_path, f"bytes={kept}-")
    assert not check(dest, [f]) and not part.exists()
    # Within one run: cut, then resumed by the retry.
    (dest / f.path).unlink()
    server.behaviour.cut_once[url_path] = 1000
    server.behaviour.requests.clear()
    fetch(dest, url=server.url, files=[f], backoff=0)
    assert server.behaviour.requests[0] == (url_path, None) and len(server.behaviour.requests) == 2
    assert server.behaviour.requests[1][1] in ("bytes=1000-", None)  # resumed (None only if nothing arrived)
    assert not check(dest, [f])


def test_server_ignoring_range_restarts_cleanly(small, server, tmp_path):
    f = next(x for x in small if x.path.endswith("mbpp.json"))
    dest = tmp_path / "data"
    part = dest / (f.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage that is not the start of the file")
    server.behaviour.ignore_range = True
    fetch(dest, url=server.url, files=[f])
    assert not check(dest, [f]) and not part.exists()


def test_corrupt_partial_file_is_started_again(small, server, tmp_path):
    f = next(x for x in small if x.path.endswith("mbpp.json"))
    dest = tmp_path / "data"
    part = dest / (f.path + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 100)  # wrong bytes: the resumed file fails its checksum, then a clean restart
    fetch(dest, url=server.url, files=[f], backoff=0)
    assert not check(dest, [f])
    assert [r for _, r in server.behaviour.requests] == ["bytes=100-", None]


def test_server_down_is_a_clear_error(small, tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(FetchError, match=r"winograde_test.csv: download failed after 2 attempt\(s\): ConnectError.*Connection refused"):
        fetch(tmp_path / "data", url=url, files=small[:1], retries=1, backoff=0)
    assert not list((tmp_path / "data").rglob("*.json"))


def test_cli_fetches_every_file_of_the_manifest(data_dir, tmp_path, capsys, monkeypatch):
    mirror = official_layout(data_dir, tmp_path / "mirror", [f.path for f in load_manifest()])
    with FileServer(mirror) as srv:
        monkeypatch.setenv("ROUTERDC_DATA_URL", srv.url)
        assert main(["data", "fetch", "--dest", str(tmp_path / "data"), "--quiet"]) == 0
    assert "27 file(s) downloaded" in capsys.readouterr().err
    assert main(["data", "check", "--dest", str(tmp_path / "data")]) == 0
    assert main(["data", "check", "--dest", str(tmp_path / "nothing")]) == 1
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["data", "fetch", "--dest", str(tmp_path / "d2"), "--url", url, "--retries", "0", "--quiet"]) == 2
    assert "download failed after 1 attempt(s): ConnectError" in capsys.readouterr().err


def test_unwritable_destination_is_a_clear_error(small, server, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(FetchError, match="cannot create the data directory"):
        fetch(blocker / "data", url=server.url, files=small[:1])
