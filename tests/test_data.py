"""CIFAR-10 data layer: sources and their priority, download, validation errors, cache, splits, augmentation.

Small official-layout archives are built in tmp_path with known pixel content, so decoding is checked exactly.
Nothing here touches the network (downloads come from an http.server on 127.0.0.1) or the user's cache.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import pickle
import socket
import tarfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cifarlab.data import (
    CIFAR10_MD5,
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10_URL,
    CLASSES,
    BatchAugment,
    CifarArrays,
    Splits,
    crop,
    crop_flip,
    cutout_at,
    default_cache_dir,
    default_data_dir,
    download_archive,
    hflip,
    load_cifar10,
    make_splits,
    normalize,
)
from cifarlab.errors import ConfigError, DataError

TRAIN_SIZES = (20, 20, 20, 20, 20)  # per data_batch_1..5
TEST_SIZE = 40
SIZES = (sum(TRAIN_SIZES), TEST_SIZE)
TEST_OFFSET = 1000  # global index of the first test image in the pixel pattern


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never read or write the user's real data/cache dirs, even through a default."""
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "env-data"))
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "env-cache"))
    for var in ("no_proxy", "NO_PROXY"):  # a proxy from the environment must not intercept 127.0.0.1
        monkeypatch.setenv(var, "127.0.0.1,localhost")


# ----------------------------------------------------------------------------------------------------------
# Building small official-layout archives


def pixel_value(i: np.ndarray | int, c: Any, y: Any, x: Any) -> Any:
    """Pixel (channel c, row y, column x) of the image with global index i; depends on every argument."""
    return (np.asarray(i) * 13 + np.asarray(c) * 80 + np.asarray(y) * 7 + np.asarray(x) * 3) % 256


def label_of(i: np.ndarray | int, salt: int = 0) -> Any:
    return (np.asarray(i) * 3 + salt) % 10


def batch_rows(first: int, n: int) -> np.ndarray:
    """(n, 3072) uint8 rows, position by position as the format defines them: R, G, B planes of 32x32."""
    p = np.arange(3072)
    c, y, x = p // 1024, (p % 1024) // 32, p % 32
    idx = np.arange(first, first + n)[:, None]
    return pixel_value(idx, c[None], y[None], x[None]).astype(np.uint8)


def expected_images(indices: np.ndarray) -> torch.Tensor:
    i = indices.reshape(-1, 1, 1, 1)
    c, y, x = np.arange(3)[:, None, None], np.arange(32)[:, None], np.arange(32)
    return torch.from_numpy(pixel_value(i, c, y, x).astype(np.uint8))


Mutator = Callable[[str, dict], dict]


def write_cifar(root: Path, salt: int = 0, mutate: Mutator | None = None, skip: tuple[str, ...] = ()) -> Path:
    """Write ``root/cifar-10-batches-py`` like the official archive (protocol-2 pickles with bytes keys)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    plan = [(f"data_batch_{k + 1}", sum(TRAIN_SIZES[:k]), n) for k, n in enumerate(TRAIN_SIZES)]
    plan.append(("test_batch", TEST_OFFSET, TEST_SIZE))
    for name, first, n in plan:
        idx = np.arange(first, first + n)
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in label_of(idx, salt)],
            b"data": batch_rows(first, n),
            b"filenames": [f"img_{i}.png".encode() for i in idx],
        }
        if mutate is not None:
            batch = mutate(name, batch)
        if name not in skip:
            (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": 20, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    (folder / "readme.html").write_bytes(b"<html>test</html>")
    return folder


def make_archive(folder: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(folder, arcname="cifar-10-batches-py")
    return dest


def build_archive(tmp_path: Path, dest: Path, **kw: Any) -> Path:
    """An official-layout .tar.gz at ``dest`` (the folder it was made from is built in a scratch dir)."""
    scratch = tmp_path / f"scratch-{hashlib.md5(str(dest).encode()).hexdigest()[:8]}"
    return make_archive(write_cifar(scratch, **kw), dest)


def assert_content(data: CifarArrays, salt: int = 0) -> None:
    n_train, n_test = SIZES
    assert data.train_x.dtype == torch.uint8 and data.test_x.dtype == torch.uint8
    assert data.train_y.dtype == torch.int64 and data.test_y.dtype == torch.int64
    assert data.train_x.shape == (n_train, 3, 32, 32) and data.test_x.shape == (n_test, 3, 32, 32)
    assert data.train_x.is_contiguous() and data.test_x.is_contiguous()
    train_idx, test_idx = np.arange(n_train), np.arange(TEST_OFFSET, TEST_OFFSET + n_test)
    assert torch.equal(data.train_x, expected_images(train_idx))
    assert torch.equal(data.test_x, expected_images(test_idx))
    assert data.train_y.tolist() == label_of(train_idx, salt).tolist()
    assert data.test_y.tolist() == label_of(test_idx, salt).tolist()
    # Spot checks written out by hand: image 7, G plane (c=1), row 2, column 5; a test image, B plane.
    assert int(data.train_x[7, 1, 2, 5]) == (7 * 13 + 80 + 14 + 15) % 256
    assert int(data.test_x[3, 2, 31, 0]) == ((TEST_OFFSET + 3) * 13 + 160 + 217) % 256


def load(data_dir: Path, cache: Path, **kw: Any) -> CifarArrays:
    kw.setdefault("download", False)
    kw.setdefault("expected_sizes", SIZES)
    return load_cifar10(data_dir, cache_dir=cache, progress=False, **kw)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


@pytest.fixture
def serve() -> Iterator[Callable[[Path], str]]:
    """serve(file) -> URL of that file on a local http.server running in a background thread."""
    servers: list[ThreadingHTTPServer] = []

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    def start(file: Path) -> str:
        handler = functools.partial(Quiet, directory=str(file.parent))
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/{file.name}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Sources


def test_constants() -> None:
    assert CLASSES[0] == "airplane" and CLASSES[-1] == "truck" and len(CLASSES) == 10
    assert CIFAR10_MEAN == (0.4914, 0.4822, 0.4465) and CIFAR10_STD == (0.2470, 0.2435, 0.2616)
    assert CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"


def test_load_from_extracted_folder(tmp_path: Path) -> None:
    write_cifar(tmp_path / "data")
    before = sorted(p.name for p in (tmp_path / "data").rglob("*"))
    data = load(tmp_path / "data", tmp_path / "cache")
    assert data.source.startswith("folder ") and "cifar-10-batches-py" in data.source
    assert_content(data)
    # The data dir may be read-only: nothing is written next to the data.
    assert sorted(p.name for p in (tmp_path / "data").rglob("*")) == before


def test_load_from_folder_given_directly(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "data")
    data = load(folder, tmp_path / "cache")
    assert data.source == f"folder {folder.resolve()}"
    assert_content(data)


def test_load_from_local_archive(tmp_path: Path) -> None:
    archive = build_archive(tmp_path, tmp_path / "data" / "cifar-10-python.tar.gz")
    data = load(tmp_path / "data", tmp_path / "cache")
    assert data.source == f"archive {archive.resolve()}"
    assert_content(data)
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["cifar-10-python.tar.gz"]  # no extraction


def test_load_from_archive_path_with_any_name(tmp_path: Path) -> None:
    archive = build_archive(tmp_path, tmp_path / "elsewhere" / "my-copy.tar.gz")
    data = load(archive, tmp_path / "cache")
    assert data.source == f"archive {archive.resolve()}"
    assert_content(data)


def test_archive_with_dot_slash_members(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "src")
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:  # like `tar -C src -czf ... .`
        tf.add(folder, arcname="./cifar-10-batches-py")
    assert_content(load(tmp_path / "data", tmp_path / "cache"))


def test_download_from_local_server(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    served = build_archive(tmp_path, tmp_path / "www" / "cifar.tar.gz")
    url = serve(served)
    data_dir = tmp_path / "fresh" / "data"  # does not exist yet
    data = load(data_dir, tmp_path / "cache", download=True, url=url, md5=md5_of(served))
    dest = data_dir / "cifar-10-python.tar.gz"
    assert dest.read_bytes() == served.read_bytes()
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-python.tar.gz"]  # no .part left
    assert data.source.startswith(f"archive {dest.resolve()}") and url in data.source
    assert_content(data)


def test_download_archive_function(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    served = build_archive(tmp_path, tmp_path / "www" / "cifar.tar.gz")
    dest = tmp_path / "out" / "a.tar.gz"
    assert download_archive(serve(served), dest, md5_of(served), progress=False) == dest
    assert dest.read_bytes() == served.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.tar.gz"]  # no .part (unique name) left


def test_source_priority(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    data_dir = tmp_path / "data"
    write_cifar(data_dir, salt=1)
    build_archive(tmp_path, data_dir / "cifar-10-python.tar.gz", salt=2)
    served = build_archive(tmp_path, tmp_path / "www" / "cifar.tar.gz", salt=3)
    url = serve(served)
    kw = {"download": True, "url": url, "md5": md5_of(served)}

    first = load(data_dir, tmp_path / "c1", **kw)  # folder beats archive and download
    assert first.source.startswith("folder ")
    assert_content(first, salt=1)

    for p in (data_dir / "cifar-10-batches-py").iterdir():
        p.unlink()
    (data_dir / "cifar-10-batches-py").rmdir()
    second = load(data_dir, tmp_path / "c2", **kw)  # archive beats download
    assert second.source == f"archive {(data_dir / 'cifar-10-python.tar.gz').resolve()}"
    assert_content(second, salt=2)

    (data_dir / "cifar-10-python.tar.gz").unlink()
    third = load(data_dir, tmp_path / "c3", **kw)  # nothing local: download
    assert "downloaded from" in third.source
    assert_content(third, salt=3)


# ----------------------------------------------------------------------------------------------------------
# Errors


def one_line(exc: pytest.ExceptionInfo[DataError]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_nothing_found_download_disabled(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load(tmp_path / "empty", tmp_path / "cache", download=False)
    message = one_line(exc)
    assert f"CIFAR-10 not found in {tmp_path / 'empty'}" in message
    assert "cifar-10-batches-py/" in message and "cifar-10-python.tar.gz" in message
    assert "downloading is disabled" in message and "--data-dir" in message


def test_nothing_found_network_failure(tmp_path: Path) -> None:
    url = closed_port_url()
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as exc:
        load(data_dir, tmp_path / "cache", download=True, url=url)
    message = one_line(exc)
    assert f"CIFAR-10 not found in {data_dir}" in message
    assert f"download from {url} failed: " in message and "--data-dir" in message
    assert not data_dir.exists()  # no archive, no .part, not even the folder


def test_missing_archive_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as exc:
        load(tmp_path / "nope" / "cifar-10-python.tar.gz", tmp_path / "cache", download=True)
    assert str(tmp_path / "nope") in one_line(exc)


def test_md5_mismatch_leaves_nothing(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    served = build_archive(tmp_path, tmp_path / "www" / "cifar.tar.gz")
    url = serve(served)
    data_dir = tmp_path / "data"
    with pytest.raises(DataError) as exc:
        load(data_dir, tmp_path / "cache", download=True, url=url, md5="0" * 32)
    message = one_line(exc)
    assert url in message and "0" * 32 in message and md5_of(served) in message
    assert not data_dir.exists()  # the folder created for the download is removed again


def test_truncated_archive_of_the_user(tmp_path: Path) -> None:
    """A truncated archive cifarlab did not download: say so, but do not tell the user to delete it."""
    archive = build_archive(tmp_path, tmp_path / "data" / "cifar-10-python.tar.gz")
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as exc:
        load(tmp_path / "data", tmp_path / "cache")
    message = one_line(exc)
    assert f"archive {archive.resolve()} is truncated or corrupt (" in message
    assert "delete" not in message and "expected the official cifar-10-python.tar.gz" in message


def test_truncated_archive_in_download_dir(tmp_path: Path) -> None:
    """The archive in cifarlab's own download dir ($CIFARLAB_DATA here) may be deleted and fetched again."""
    archive = build_archive(tmp_path, tmp_path / "env-data" / "cifar-10-python.tar.gz")
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as exc:
        load_cifar10(download=False, cache_dir=tmp_path / "cache", expected_sizes=SIZES)
    message = one_line(exc)
    assert f"archive {archive.resolve()} is truncated or corrupt (" in message
    assert "delete it and download again" in message


def test_corrupt_pickle_in_folder(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "data")
    (folder / "data_batch_2").write_bytes(b"\x80\x02}q\x00(garbage")
    with pytest.raises(DataError, match="truncated or corrupt") as exc:
        load(tmp_path / "data", tmp_path / "cache")
    assert "data_batch_2" in one_line(exc)


class _Evil:
    """A pickle that would create a directory when loaded by a plain pickle.load."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (self.target,))


def test_pickle_cannot_run_code(tmp_path: Path) -> None:
    target = tmp_path / "pwned"
    folder = write_cifar(tmp_path / "data", mutate=lambda n, b: {**b, b"data": _Evil(str(target))})
    assert folder.is_dir()
    with pytest.raises(DataError, match="unexpected global"):
        load(tmp_path / "data", tmp_path / "cache")
    assert not target.exists()


def _bad_shape(name: str, b: dict) -> dict:
    return {**b, b"data": b[b"data"][:, :3071]} if name == "data_batch_2" else b


def _bad_dtype(name: str, b: dict) -> dict:
    return {**b, b"data": b[b"data"].astype(np.int32)} if name == "data_batch_2" else b


def _bad_label(name: str, b: dict) -> dict:
    return {**b, b"labels": [*b[b"labels"][:-1], 10]} if name == "test_batch" else b


def _negative_label(name: str, b: dict) -> dict:
    return {**b, b"labels": [-1, *b[b"labels"][1:]]} if name == "data_batch_1" else b


def _short_labels(name: str, b: dict) -> dict:
    return {**b, b"labels": b[b"labels"][:-1]} if name == "data_batch_4" else b


def _no_labels(name: str, b: dict) -> dict:
    return {k: v for k, v in b.items() if k != b"labels"} if name == "data_batch_5" else b


def _not_a_dict(name: str, b: dict) -> Any:
    return [1, 2, 3] if name == "data_batch_3" else b


BAD_BATCHES = [
    (_bad_shape, "data_batch_2", r"'data' is uint8 \(20, 3071\), expected uint8 of shape \(N, 3072\)"),
    (_bad_dtype, "data_batch_2", r"'data' is int32 \(20, 3072\)"),
    (_bad_label, "test_batch", r"labels must be in 0\.\.9, found 0\.\.10"),
    (_negative_label, "data_batch_1", r"labels must be in 0\.\.9, found -1\.\."),
    (_short_labels, "data_batch_4", r"'labels' must be 20 integers"),
    (_no_labels, "data_batch_5", r"missing key\(s\) labels"),
    (_not_a_dict, "data_batch_3", r"expected a pickled dict"),
]
BAD_IDS = [m.__name__.strip("_") for m, _, _ in BAD_BATCHES]


@pytest.mark.parametrize("form", ["folder", "archive"])
@pytest.mark.parametrize(("mutate", "member", "pattern"), BAD_BATCHES, ids=BAD_IDS)
def test_malformed_batches(tmp_path: Path, form: str, mutate: Mutator, member: str, pattern: str) -> None:
    folder = write_cifar(tmp_path / "src", mutate=mutate)
    data_dir = folder if form == "folder" else make_archive(folder, tmp_path / "data" / "c.tar.gz")
    with pytest.raises(DataError, match=pattern) as exc:
        load(data_dir, tmp_path / "cache")
    message = one_line(exc)
    assert member in message and str(data_dir.resolve()) in message


@pytest.mark.parametrize("form", ["folder", "archive"])
def test_missing_batch(tmp_path: Path, form: str) -> None:
    folder = write_cifar(tmp_path / "src", skip=("data_batch_3",))
    data_dir = folder if form == "folder" else make_archive(folder, tmp_path / "data" / "c.tar.gz")
    with pytest.raises(DataError, match="data_batch_3") as exc:
        load(data_dir, tmp_path / "cache")
    assert str(data_dir.resolve()) in one_line(exc)


def test_wrong_totals(tmp_path: Path) -> None:
    write_cifar(tmp_path / "data")
    with pytest.raises(DataError, match=r"data_batch_1\.\.5 hold 100 images in total, expected 50000"):
        load_cifar10(tmp_path / "data", download=False, cache_dir=tmp_path / "cache")  # default 50k/10k
    with pytest.raises(DataError, match=r"test_batch hold 40 images in total, expected 41"):
        load(tmp_path / "data", tmp_path / "cache", expected_sizes=(100, 41))


# ----------------------------------------------------------------------------------------------------------
# Cache and defaults


def cache_files(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.exists() else []


def test_cache_hit_equal_and_invalidated_by_source_change(tmp_path: Path) -> None:
    archive = build_archive(tmp_path, tmp_path / "data" / "cifar-10-python.tar.gz")
    cache = tmp_path / "cache"
    first = load(tmp_path / "data", cache)
    assert first.source.startswith("archive ")
    [cache_file] = cache_files(cache)  # one file, no temp files left
    assert cache_file.suffix == ".pt"

    second = load(tmp_path / "data", cache)
    assert second.source.startswith(f"cache {cache_file}") and "archive" in second.source
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name))
        assert getattr(second, name).is_contiguous()

    # Touching the archive (new mtime) invalidates the cache...
    st = archive.stat()
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    third = load(tmp_path / "data", cache)
    assert third.source.startswith("archive ")
    assert len(cache_files(cache)) == 2
    # ...and a replaced archive (other labels) is decoded again, never served stale.
    build_archive(tmp_path, tmp_path / "data2" / "x.tar.gz", salt=7)
    os.replace(tmp_path / "data2" / "x.tar.gz", archive)
    os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns + 9_000_000_000))
    fourth = load(tmp_path / "data", cache)
    assert not fourth.source.startswith("cache")
    assert_content(fourth, salt=7)


def test_cache_of_folder_invalidated_by_batch_change(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "data")
    cache = tmp_path / "cache"
    load(folder, cache)
    assert load(folder, cache).source.startswith("cache ")
    st = (folder / "test_batch").stat()
    os.utime(folder / "test_batch", ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))
    assert load(folder, cache).source.startswith("folder ")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape"])
def test_corrupt_cache_is_rebuilt(tmp_path: Path, damage: str) -> None:
    write_cifar(tmp_path / "data")
    cache = tmp_path / "cache"
    load(tmp_path / "data", cache)
    [cache_file] = cache_files(cache)
    if damage == "garbage":
        cache_file.write_bytes(b"not a torch file")
    elif damage == "truncated":
        cache_file.write_bytes(cache_file.read_bytes()[:1000])
    else:
        torch.save({"train_x": torch.zeros(3, dtype=torch.uint8)}, cache_file)
    rebuilt = load(tmp_path / "data", cache)
    assert rebuilt.source.startswith("folder ")
    assert_content(rebuilt)
    assert load(tmp_path / "data", cache).source.startswith("cache ")
    assert cache_files(cache) == [cache_file]


def test_default_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIFARLAB_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "c"))
    assert default_data_dir() == tmp_path / "d" and default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("CIFARLAB_DATA")
    monkeypatch.delenv("CIFARLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "cifarlab"
    assert default_cache_dir() == tmp_path / "xdg" / "cifarlab" / "cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "cifarlab"


def test_defaults_used_by_load(tmp_path: Path) -> None:
    write_cifar(tmp_path / "env-data")  # $CIFARLAB_DATA, set by the autouse fixture
    data = load_cifar10(download=False, expected_sizes=SIZES)
    assert_content(data)
    assert len(cache_files(tmp_path / "env-cache")) == 1  # $CIFARLAB_CACHE


# ----------------------------------------------------------------------------------------------------------
# Hostile inputs: odd data dirs, failed and concurrent downloads, files that are not ours, read-only folders


def tree(root: Path) -> list[str]:
    """Everything under ``root``, as relative paths: compared before/after to prove nothing was created."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def serve_raw() -> Iterator[Callable[..., str]]:
    """serve_raw(body, declared=None, pause=0.0) -> URL that answers every GET with ``body`` in 4 pieces,
    ``pause`` seconds apart, announcing ``declared`` bytes (default: the true length), then closes."""
    servers: list[ThreadingHTTPServer] = []

    def start(body: bytes, declared: int | None = None, pause: float = 0.0) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body) if declared is None else declared))
                self.end_headers()
                step = max(1, -(-len(body) // 4))
                for i in range(0, len(body), step):
                    self.wfile.write(body[i : i + step])
                    self.wfile.flush()
                    time.sleep(pause)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def deny_writes_under(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make ``folder`` behave as read-only (EACCES on create/write-open/mkdir inside it), also for root."""
    real_open, real_mkdir = os.open, os.mkdir
    top = os.path.abspath(folder)

    def inside(path: Any) -> bool:
        p = os.path.abspath(os.fsdecode(path))
        return p == top or p.startswith(top + os.sep)

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if inside(os.path.dirname(os.path.abspath(os.fsdecode(path)))):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


needs_non_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="runs as root, where file permissions are not enforced (the simulated variant covers it)",
)


@pytest.mark.parametrize("download", [True, False])
@pytest.mark.parametrize("case", ["dev_null", "under_a_file", "deep_under_a_file"])
def test_data_dir_that_cannot_be_a_folder(tmp_path: Path, case: str, download: bool) -> None:
    """Issue row 2: --data-dir /dev/null or /etc/passwd/sub is one DataError line naming the path."""
    blocker = Path("/dev/null") if case == "dev_null" else tmp_path / "passwd"
    blocker.exists() or blocker.write_text("root:x:0:0:root:/root:/bin/bash\n")
    data_dir = {"dev_null": blocker, "under_a_file": blocker / "sub", "deep_under_a_file": blocker / "a" / "b"}[case]
    before = tree(tmp_path)
    with pytest.raises(DataError) as exc:
        load(data_dir, tmp_path / "cache", download=download, url=closed_port_url())
    message = one_line(exc)
    assert str(data_dir) in message and str(blocker) in message and "not a folder" in message
    assert "expected" in message and "cifar-10-python.tar.gz" in message and "cifar-10-batches-py/" in message
    assert tree(tmp_path) == before


def test_download_archive_into_a_file_is_a_data_error(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    served = build_archive(tmp_path, tmp_path / "www" / "cifar.tar.gz")
    (tmp_path / "passwd").write_text("x\n")
    before = tree(tmp_path)
    with pytest.raises(DataError) as exc:  # not NotADirectoryError from the cleanup
        download_archive(serve(served), tmp_path / "passwd" / "sub" / "a.tar.gz", progress=False)
    assert str(tmp_path / "passwd") in one_line(exc)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("failure", ["closed_port", "http_404", "cut_mid_transfer", "md5_mismatch"])
def test_failed_download_creates_nothing(
    tmp_path: Path, serve: Callable[[Path], str], serve_raw: Callable[..., str], failure: str
) -> None:
    """Issue row 14: --data-dir /nonexistent/deep/dir and a failed download leave no folder behind."""
    served = build_archive(tmp_path, tmp_path / "www" / "cifar.tar.gz")
    body = served.read_bytes()
    url, md5 = {
        "closed_port": (closed_port_url(), None),
        "http_404": (serve(served).replace("cifar.tar.gz", "missing.tar.gz"), None),
        "cut_mid_transfer": (serve_raw(body[: len(body) // 2], declared=len(body)), None),
        "md5_mismatch": (serve(served), "0" * 32),
    }[failure]
    data_dir = tmp_path / "nonexistent" / "deep" / "dir"
    before = tree(tmp_path)
    with pytest.raises(DataError) as exc:
        load(data_dir, tmp_path / "cache", download=True, url=url, md5=md5)
    assert str(data_dir) in one_line(exc) or url in one_line(exc)
    assert tree(tmp_path) == before
    assert not (tmp_path / "nonexistent").exists()


def test_failed_download_keeps_existing_folders(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "notes.txt").write_text("mine\n")
    with pytest.raises(DataError, match=r"download from .* failed"):
        load(data_dir, tmp_path / "cache", download=True, url=closed_port_url())
    assert tree(data_dir) == ["notes.txt"]


def test_concurrent_downloads_both_succeed(tmp_path: Path, serve_raw: Callable[..., str]) -> None:
    """Issue row 15: two downloads of the archive at once (a slow server makes them overlap)."""
    served = build_archive(tmp_path, tmp_path / "www" / "cifar.tar.gz")
    url = serve_raw(served.read_bytes(), pause=0.15)
    data_dir = tmp_path / "fresh" / "data"
    barrier = threading.Barrier(2)
    results: list[CifarArrays | None] = [None, None]
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[k] = load(data_dir, tmp_path / "cache", download=True, url=url, md5=md5_of(served))
        except BaseException as exc:  # reported below, with its type
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    first, second = results
    assert first is not None and second is not None
    assert_content(first)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    dest = data_dir / "cifar-10-python.tar.gz"
    assert tree(data_dir) == ["cifar-10-python.tar.gz"]  # no .part / temp files left
    assert md5_of(dest) == md5_of(served)
    assert load(data_dir, tmp_path / "cache2").source == f"archive {dest.resolve()}"  # complete and valid


@pytest.mark.parametrize("case", ["text_file_given", "text_file_as_archive_name", "empty_file", "garbage_tar_gz"])
def test_file_that_is_not_an_archive(tmp_path: Path, case: str) -> None:
    """Issue row 17: a file that is not an archive is not ours; never advise deleting it."""
    content = b"" if case == "empty_file" else b"hello, these are my notes\n" * 50
    name = {"text_file_given": "notes.txt", "garbage_tar_gz": "mine.tar.gz"}.get(case, "cifar-10-python.tar.gz")
    path = tmp_path / "data" / name
    path.parent.mkdir()
    path.write_bytes(content)
    data_dir = path.parent if case in ("text_file_as_archive_name", "empty_file") else path
    with pytest.raises(DataError) as exc:
        load(data_dir, tmp_path / "cache", download=True, url=closed_port_url())
    message = one_line(exc)
    assert f"{path.resolve()} is not a CIFAR-10 archive" in message
    assert "cifar-10-python.tar.gz" in message and "cifar-10-batches-py/" in message
    assert "delete" not in message and "truncated" not in message
    assert path.read_bytes() == content and tree(tmp_path / "data") == [name]


def test_corrupt_folder_batch_does_not_advise_deleting_the_folder(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path / "data")
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(garbage")
    with pytest.raises(DataError) as exc:
        load(folder, tmp_path / "cache")
    message = one_line(exc)
    assert str(folder / "test_batch") in message and "truncated or corrupt" in message and "delete" not in message


@pytest.mark.parametrize("target", ["folder_itself", "missing_subfolder"])
def test_download_into_read_only_folder_simulated(
    tmp_path: Path, serve: Callable[[Path], str], monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    served = build_archive(tmp_path, tmp_path / "www" / "cifar.tar.gz")
    ro = tmp_path / "ro"
    ro.mkdir()
    data_dir = ro if target == "folder_itself" else ro / "new" / "sub"
    before = tree(tmp_path)
    deny_writes_under(monkeypatch, ro)
    with pytest.raises(DataError) as exc:
        load(data_dir, tmp_path / "cache", download=True, url=serve(served), md5=md5_of(served))
    monkeypatch.undo()
    message = one_line(exc)
    assert "Permission denied" in message
    assert str(ro if target == "folder_itself" else ro / "new") in message
    assert tree(tmp_path) == before


@needs_non_root
def test_download_into_read_only_folder(tmp_path: Path, serve: Callable[[Path], str]) -> None:
    served = build_archive(tmp_path, tmp_path / "www" / "cifar.tar.gz")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(DataError) as exc:
            load(ro, tmp_path / "cache", download=True, url=serve(served), md5=md5_of(served))
        message = one_line(exc)
        assert str(ro) in message and "Permission denied" in message
        assert tree(ro) == []
    finally:
        ro.chmod(0o755)


def assert_loads_without_cache(tmp_path: Path, cache_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cifar(tmp_path / "data")
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a Python warning would print two lines (with the source line)
        for _ in range(2):
            data = load_cifar10(tmp_path / "data", download=False, progress=False, expected_sizes=SIZES)
            assert data.source.startswith("folder ")
            assert_content(data)
            err = capsys.readouterr().err.splitlines()
            assert len(err) == 1 and "cache" in err[0] and str(cache_path) in err[0], err


@pytest.mark.parametrize("case", ["a_file", "under_a_file"])
def test_unwritable_cache_dir_is_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder\n")
    cache = blocker if case == "a_file" else blocker / "sub"
    monkeypatch.setenv("CIFARLAB_CACHE", str(cache))
    assert_loads_without_cache(tmp_path, cache, capsys)
    assert blocker.read_text() == "not a folder\n"


def test_read_only_cache_dir_simulated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    monkeypatch.setenv("CIFARLAB_CACHE", str(cache))
    deny_writes_under(monkeypatch, cache)
    assert_loads_without_cache(tmp_path, cache, capsys)
    assert tree(cache) == []


@needs_non_root
def test_read_only_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    cache.chmod(0o555)
    monkeypatch.setenv("CIFARLAB_CACHE", str(cache))
    try:
        assert_loads_without_cache(tmp_path, cache, capsys)
        assert tree(cache) == []
    finally:
        cache.chmod(0o755)


# ----------------------------------------------------------------------------------------------------------
# Splits


def synthetic(n_train: int = 1000, n_test: int = 200, seed: int = 0) -> CifarArrays:
    """Balanced shuffled labels; image i carries its index in pixels (0,0,0) and (0,0,1)."""
    g = torch.Generator().manual_seed(seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
        x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
        x[:, 0, 0, 0] = (torch.arange(n) % 256).to(torch.uint8)
        x[:, 0, 0, 1] = (torch.arange(n) // 256).to(torch.uint8)
        return x, y

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    return CifarArrays(train_x, train_y, test_x, test_y, source="synthetic")


def index_of(x: torch.Tensor) -> torch.Tensor:
    return x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()


def counts(y: torch.Tensor) -> list[int]:
    return torch.bincount(y, minlength=10).tolist()


@pytest.fixture(scope="module")
def data() -> CifarArrays:
    return synthetic()


def test_split_disjoint_stratified_and_consistent(data: CifarArrays) -> None:
    s = make_splits(data, val_size=200, seed=0)
    assert isinstance(s, Splits)
    assert counts(s.val_y) == [20] * 10 and counts(s.train_y) == [80] * 10
    train, val = set(s.train_index.tolist()), set(s.val_index.tolist())
    assert not train & val and train | val == set(range(1000))
    assert s.train_index.dtype == torch.int64 and s.val_index.dtype == torch.int64
    assert torch.equal(index_of(s.train_x), s.train_index) and torch.equal(index_of(s.val_x), s.val_index)
    assert torch.equal(s.train_y, data.train_y[s.train_index])
    assert torch.equal(s.val_y, data.train_y[s.val_index])
    assert torch.equal(s.test_x, data.test_x) and torch.equal(s.test_y, data.test_y)
    assert s.train_x.dtype == torch.uint8 and s.val_x.shape == (200, 3, 32, 32)


def test_split_remainder_spread_deterministically(data: CifarArrays) -> None:
    a, b = make_splits(data, val_size=205, seed=0), make_splits(data, val_size=205, seed=1)
    assert sorted(counts(a.val_y)) == [20] * 5 + [21] * 5
    assert counts(a.val_y) == counts(b.val_y)  # which classes get the extra one does not depend on luck


def test_split_determinism(data: CifarArrays) -> None:
    a, b = make_splits(data, val_size=100, seed=3), make_splits(data, val_size=100, seed=3)
    for name in ("train_index", "val_index", "train_x", "val_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    c = make_splits(data, val_size=100, seed=4)
    assert not torch.equal(a.val_index, c.val_index)
    assert counts(c.val_y) == [10] * 10


def test_val_does_not_depend_on_subsets(data: CifarArrays) -> None:
    base = make_splits(data, val_size=100, seed=0)
    other = make_splits(data, val_size=100, subset=90, test_subset=20, seed=0)
    assert torch.equal(base.val_index, other.val_index)


def test_subset_and_test_subset(data: CifarArrays) -> None:
    s = make_splits(data, val_size=100, subset=300, test_subset=50, seed=0)
    assert len(s.train_index) == 300 and counts(s.train_y) == [30] * 10
    assert not set(s.train_index.tolist()) & set(s.val_index.tolist())
    assert torch.equal(index_of(s.train_x), s.train_index)
    assert len(s.test_y) == 50 and counts(s.test_y) == [5] * 10
    test_idx = index_of(s.test_x)
    assert len(set(test_idx.tolist())) == 50 and torch.equal(s.test_y, data.test_y[test_idx])
    odd = make_splits(data, val_size=100, subset=305, seed=0)
    assert sorted(counts(odd.train_y)) == [30] * 5 + [31] * 5


def test_val_size_zero(data: CifarArrays) -> None:
    s = make_splits(data, val_size=0)
    assert s.val_x.shape == (0, 3, 32, 32) and s.val_x.dtype == torch.uint8
    assert s.val_y.shape == (0,) and s.val_y.dtype == torch.int64 and s.val_index.numel() == 0
    assert torch.equal(s.train_index, torch.arange(1000))


def test_unbalanced_classes_stay_within_counts() -> None:
    d = synthetic()
    d.train_y = torch.cat([torch.zeros(10, dtype=torch.long), torch.arange(990) % 9 + 1])
    s = make_splits(d, val_size=100, seed=0)
    c = counts(s.val_y)
    assert sum(c) == 100 and c[0] == 1 and all(10 <= v <= 11 for v in c[1:])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"val_size": 1000}, "val_size"),
        ({"val_size": -1}, "val_size"),
        ({"val_size": 200, "subset": 801}, "subset"),
        ({"val_size": 100, "subset": 0}, "subset"),
        ({"val_size": 100, "test_subset": 201}, "test_subset"),
        ({"val_size": 100, "test_subset": 0}, "test_subset"),
    ],
)
def test_impossible_sizes(data: CifarArrays, kwargs: dict, name: str) -> None:
    with pytest.raises(DataError, match=f"^{name}=") as exc:
        make_splits(data, **kwargs)
    assert "\n" not in str(exc.value)


# ----------------------------------------------------------------------------------------------------------
# Augmentation


@pytest.fixture(scope="module")
def imgs() -> torch.Tensor:
    """Random uint8 batch, non-square (12x10) so rows and columns cannot be confused."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (6, 3, 12, 10), generator=g, dtype=torch.uint8)


def test_hflip(imgs: torch.Tensor) -> None:
    mask = torch.tensor([True, False, True, False, False, True])
    y = hflip(imgs, mask)
    assert torch.equal(y[mask], imgs[mask].flip(-1)) and torch.equal(y[~mask], imgs[~mask])
    assert int(y[0, 1, 4, 0]) == int(imgs[0, 1, 4, 9])
    assert torch.equal(hflip(y, mask), imgs)


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_identity_offset(imgs: torch.Tensor, mode: str) -> None:
    p = torch.full((6,), 3)
    assert torch.equal(crop(imgs, p, p, 3, mode), imgs)


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_crop_matches_padded_reference(imgs: torch.Tensor, mode: str) -> None:
    p = 3
    g = torch.Generator().manual_seed(1)
    dx, dy = torch.randint(0, 2 * p + 1, (2, 6), generator=g)
    out = crop(imgs, dx, dy, p, mode)
    padded = F.pad(imgs.float(), (p, p, p, p), mode="reflect" if mode == "reflect" else "constant").byte()
    for b in range(6):  # reference: explicit pad + slice per image
        ref = padded[b, :, dy[b] : dy[b] + 12, dx[b] : dx[b] + 10]
        assert torch.equal(out[b], ref), (b, int(dx[b]), int(dy[b]))


def test_crop_shift_and_padding_values(imgs: torch.Tensor) -> None:
    p, ones = 3, torch.ones(6, dtype=torch.long)
    # Offset (dx, dy) = (p + 2, p - 1): output pixel (i, j) shows input pixel (i - 1, j + 2).
    out = crop(imgs, ones * (p + 2), ones * (p - 1), p, "zeros")
    assert torch.equal(out[:, :, 5, 3], imgs[:, :, 4, 5])
    assert torch.equal(out[:, :, 1:, :8], imgs[:, :, :11, 2:])
    assert (out[:, :, 0, :] == 0).all() and (out[:, :, :, 8:] == 0).all()
    # Offset (0, 0): top-left corner of the padded image.
    zeros = crop(imgs, ones * 0, ones * 0, p, "zeros")
    assert (zeros[:, :, :p, :] == 0).all() and (zeros[:, :, :, :p] == 0).all()
    assert torch.equal(zeros[:, :, p:, p:], imgs[:, :, : 12 - p, : 10 - p])
    mirrored = crop(imgs, ones * 0, ones * 0, p, "reflect")
    for k in range(1, p + 1):  # padded row -k mirrors row k (edge not repeated)
        assert torch.equal(mirrored[:, :, p - k, p:], imgs[:, :, k, : 10 - p])
        assert torch.equal(mirrored[:, :, p:, p - k], imgs[:, :, : 12 - p, k])


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_fused_crop_flip(imgs: torch.Tensor, mode: str) -> None:
    g = torch.Generator().manual_seed(2)
    dx, dy = torch.randint(0, 5, (2, 6), generator=g)
    flip = torch.tensor([True, False, True, True, False, False])
    ref = hflip(crop(imgs, dx, dy, 2, mode), flip)
    assert torch.equal(crop_flip(imgs, dx, dy, flip, 2, mode), ref)
    cl = crop_flip(imgs, dx, dy, flip, 2, mode, channels_last=True)
    assert torch.equal(cl, ref) and cl.is_contiguous(memory_format=torch.channels_last)


def test_crop_rejects_too_much_reflect_padding(imgs: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="reflect padding"):
        BatchAugment(crop_padding=10).train(imgs, torch.Generator())


def expected_cutout(shape: tuple[int, ...], cy: list[int], cx: list[int], size: int) -> torch.Tensor:
    b, c, h, w = shape
    mask = torch.zeros(b, c, h, w, dtype=torch.bool)
    for k in range(b):
        for r in range(h):
            for q in range(w):
                top, left = cy[k] - size // 2, cx[k] - size // 2
                mask[k, :, r, q] = top <= r < top + size and left <= q < left + size
    return mask


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("size", [6, 5])
def test_cutout_at_exact_square(size: int, layout: str) -> None:
    x = torch.rand(4, 3, 16, 28, generator=torch.Generator().manual_seed(0)) + 1.0  # never 0
    x = x[..., ::2] if layout == "strided" else x[..., :14].contiguous()
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    cy, cx = [8, 0, 15, 5], [7, 0, 3, 13]
    out = cutout_at(x, torch.tensor(cy), torch.tensor(cx), size)
    mask = expected_cutout(x.shape, cy, cx, size)
    assert torch.equal(out == 0, mask)
    assert torch.equal(out[~mask], x[~mask])
    half = size // 2
    assert int(mask[0, 0].sum()) == size * size  # interior: the full square
    assert int(mask[1, 0].sum()) == (size - half) ** 2  # corner: clipped on two sides


def test_random_cutout_is_one_clipped_square_per_image() -> None:
    # mean 0, std 1/255: "normalised" pixels equal the input; only the cutout square is 0
    x = torch.randint(1, 256, (64, 3, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = BatchAugment(0, flip=False, cutout=8, mean=(0.0,) * 3, std=(1 / 255,) * 3).train(
        x, torch.Generator().manual_seed(5))
    x = x.float()
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # same square in every channel
    assert torch.equal(out[~zero], x[~zero])
    for k in range(64):
        rows = zero[k, 0].any(1).nonzero().flatten()
        cols = zero[k, 0].any(0).nonzero().flatten()
        n = int(zero[k, 0].sum())
        assert n == len(rows) * len(cols)  # a rectangle
        assert 4 <= len(rows) <= 8 and 4 <= len(cols) <= 8  # centre inside the image: at least half the side
    assert int(zero[:, 0].sum(dim=(1, 2)).eq(64).sum()) > 10  # mostly unclipped squares


def test_random_flip_and_crop_draws() -> None:
    x = (torch.arange(10, dtype=torch.uint8) + 1).view(1, 1, 1, 10).expand(2000, 3, 8, 10).contiguous()
    identity = {"mean": (0.0,) * 3, "std": (1 / 255,) * 3}  # normalised pixels equal the input
    flipped = BatchAugment(0, **identity).train(x, torch.Generator().manual_seed(0))[:, 0, 0, 0] == 10
    assert 900 < int(flipped.sum()) < 1100
    shifted = BatchAugment(2, "zeros", flip=False, **identity).train(x, torch.Generator().manual_seed(0)).round()
    # Column 0 of the crop shows input column dx - 2 (value dx - 1), or padding (0) for dx < 2.
    first = torch.bincount(shifted[:, 0, 3, 0].long(), minlength=5).tolist()
    assert first[0] > 650 and all(300 < n < 500 for n in first[1:4]) and first[4] == 0  # 2/5 pad, 1/5 each
    # Row 0 shows input row dy - 2: padding for dy < 2, so about 2/5 of the rows are all zeros.
    assert 650 < int((shifted[:, 0, 0, :] == 0).all(1).sum()) < 950


def test_normalize_matches_float_reference(imgs: torch.Tensor) -> None:
    out = normalize(imgs)
    mean = torch.tensor(CIFAR10_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, dtype=torch.float64).view(1, 3, 1, 1)
    ref = (imgs.double() / 255.0 - mean) / std
    assert out.dtype == torch.float32 and out.shape == imgs.shape
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    extremes = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    half = normalize(extremes, (0.5,) * 3, (0.5,) * 3)
    torch.testing.assert_close(half[0, :, 0], torch.tensor([[-1.0, 1.0]] * 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels_last", [True, False])
def test_batch_augment_output_format(imgs: torch.Tensor, channels_last: bool) -> None:
    aug = BatchAugment(crop_padding=2, cutout=4, channels_last=channels_last)
    for out in (aug.train(imgs, torch.Generator().manual_seed(0)), aug.eval(imgs)):
        assert out.dtype == torch.float32 and out.shape == imgs.shape
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert out.is_contiguous() == (not channels_last)
    torch.testing.assert_close(aug.eval(imgs), normalize(imgs), atol=0, rtol=0)


def test_batch_augment_reproducible(imgs: torch.Tensor) -> None:
    aug = BatchAugment(crop_padding=3, cutout=4)
    a = aug.train(imgs, torch.Generator().manual_seed(11))
    b = aug.train(imgs, torch.Generator().manual_seed(11))
    c = aug.train(imgs, torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_batch_augment_without_augmentation_is_eval(imgs: torch.Tensor) -> None:
    aug = BatchAugment(crop_padding=0, flip=False, cutout=0)
    assert torch.equal(aug.train(imgs, torch.Generator().manual_seed(0)), aug.eval(imgs))


@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_batch_augment_train_is_a_crop_flip_per_image(mode: str) -> None:
    x = torch.randint(0, 256, (8, 3, 16, 16), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    p = 2
    out = BatchAugment(crop_padding=p, pad_mode=mode).train(x, torch.Generator().manual_seed(0))
    found = [None] * 8
    for dx in range(2 * p + 1):  # try every (dx, dy, flip) on every image
        for dy in range(2 * p + 1):
            for flip in (False, True):
                full = torch.full((8,), dx), torch.full((8,), dy), torch.full((8,), flip)
                cand = normalize(crop_flip(x, full[0], full[1], full[2], p, mode))
                for k in range(8):
                    if torch.equal(cand[k], out[k]):
                        found[k] = (dx, dy, flip)
    assert all(f is not None for f in found), found
    assert len(set(found)) > 1  # independent draws per image


def test_batch_augment_cutout_sets_mean(imgs: torch.Tensor) -> None:
    out = BatchAugment(crop_padding=0, flip=False, cutout=4).train(imgs, torch.Generator().manual_seed(0))
    ref = normalize(imgs)
    zero = out == 0
    assert (zero.flatten(1).sum(1) >= 3 * 2 * 2).all()  # every image got a (possibly clipped) square
    assert torch.equal(out[~zero], ref[~zero])


def test_batch_augment_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match="pad_mode"):
        BatchAugment(pad_mode="wrap")
    with pytest.raises(ConfigError, match="crop_padding"):
        BatchAugment(crop_padding=-1)
    with pytest.raises(ConfigError, match="cutout"):
        BatchAugment(cutout=-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_on_cuda_matches_cpu(imgs: torch.Tensor) -> None:
    dev = torch.device("cuda")
    dx, dy = torch.tensor([0, 6, 3, 1, 5, 2]), torch.tensor([6, 0, 3, 2, 4, 1])
    flip = torch.tensor([True, False, True, False, True, False])
    for mode in ("reflect", "zeros"):
        cpu = crop_flip(imgs, dx, dy, flip, 3, mode, channels_last=True)
        gpu = crop_flip(imgs.to(dev), dx.to(dev), dy.to(dev), flip.to(dev), 3, mode, channels_last=True)
        assert torch.equal(gpu.cpu(), cpu)
    torch.testing.assert_close(normalize(imgs.to(dev)).cpu(), normalize(imgs), atol=1e-6, rtol=0)
    aug = BatchAugment(crop_padding=3, cutout=4)
    a = aug.train(imgs.to(dev), torch.Generator(device=dev).manual_seed(0))
    b = aug.train(imgs.to(dev), torch.Generator(device=dev).manual_seed(0))
    assert a.device.type == "cuda" and a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------------------
# The real archive


@pytest.mark.realdata
def test_real_archive(cifar_archive: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    data = load_cifar10(data_dir=cifar_archive, download=False, cache_dir=cache, progress=False)
    assert data.source == f"archive {cifar_archive.resolve()}"
    assert data.train_x.shape == (50000, 3, 32, 32) and data.test_x.shape == (10000, 3, 32, 32)
    assert counts(data.train_y) == [5000] * 10 and counts(data.test_y) == [1000] * 10
    # Per-channel mean/std over the training set, accumulated in int64 chunks (no 600 MB float copy).
    s1 = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    for chunk in data.train_x.split(5000):
        c = chunk.to(torch.int32)
        s1 += c.sum(dim=(0, 2, 3)).double()
        s2 += (c * c).sum(dim=(0, 2, 3)).double()
    n = 50000 * 32 * 32
    mean = s1 / n / 255
    std = (s2 / n - (s1 / n) ** 2).sqrt() / 255
    assert [round(v, 3) for v in mean.tolist()] == [round(v, 3) for v in CIFAR10_MEAN]
    assert [round(v, 3) for v in std.tolist()] == [round(v, 3) for v in CIFAR10_STD]

    start = time.perf_counter()
    again = load_cifar10(data_dir=cifar_archive, download=False, cache_dir=cache, progress=False)
    elapsed = time.perf_counter() - start
    assert again.source.startswith("cache ")
    assert elapsed < 2.0, f"cached reload took {elapsed:.2f} s"
    assert torch.equal(again.train_x, data.train_x) and torch.equal(again.test_y, data.test_y)
