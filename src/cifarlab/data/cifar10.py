"""CIFAR-10: finding, downloading, validating and decoding the official python archive, with a tensor cache.

Sources are tried in this order (see :func:`load_cifar10`):

1. an extracted ``cifar-10-batches-py/`` folder,
2. a ``cifar-10-python.tar.gz`` archive (members are read straight from the tar stream, nothing is extracted),
3. a download from the official URL (md5-checked, streamed to a uniquely named temp file and renamed, so
   concurrent downloads do not collide; folders are created only once the server answers and removed again
   if the download fails).

Local copies are checked by *structure* (members, keys, dtypes, shapes, label range, totals), not by md5,
because re-packed copies are legitimate and have another checksum. The decoded uint8 tensors are cached as one
file keyed by a fingerprint of the source, so later runs skip the gzip + pickle work (a fraction of a second
instead of several seconds).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import pickle
import secrets
import stat
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from cifarlab.errors import DataError

CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES: tuple[str, ...] = ("test_batch",)
IMAGE_SHAPE = (3, 32, 32)
_ROW = 3 * 32 * 32  # one image as stored: R, G, B planes of 32x32, row-major
_CACHE_FORMAT = 1  # bump when the cache file layout changes, so old files are not trusted
_DOWNLOAD_TIMEOUT_S = 60
_EXPECTED = f"expected the official {ARCHIVE_NAME}, an extracted {FOLDER_NAME}/ folder, or a folder holding either"


@dataclass
class CifarArrays:
    """The decoded data set: uint8 images (N, 3, 32, 32) and int64 labels, contiguous, on the CPU."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str  # human-readable origin, e.g. "archive /x/cifar-10-python.tar.gz" or "cache ... (from ...)"


# ----------------------------------------------------------------------------------------------------
# Locations


def _cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cifarlab"


def default_data_dir() -> Path:
    """Where CIFAR-10 is looked for / downloaded: ``$CIFARLAB_DATA``, else ``$XDG_CACHE_HOME/cifarlab``
    or ``~/.cache/cifarlab``."""
    env = os.environ.get("CIFARLAB_DATA")
    return Path(env).expanduser() if env else _cache_root()


def default_cache_dir() -> Path:
    """Where decoded tensors are cached: ``$CIFARLAB_CACHE``, else ``<cache root>/cache``.

    Deliberately not derived from the data dir, which may be read-only (a shared data set)."""
    env = os.environ.get("CIFARLAB_CACHE")
    return Path(env).expanduser() if env else _cache_root() / "cache"


# ----------------------------------------------------------------------------------------------------
# Download


class _DownloadFailed(DataError):
    """Network-level failure; ``load_cifar10`` turns it into its "not found ... download failed" message."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"download from {url} failed: {reason}")
        self.reason = reason


class _WriteFailed(DataError):
    """The download arrived but cannot be stored (read-only folder, a file in the way, disk full...)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"cannot {what}: {reason}")


# What the network side can raise: URLError and socket errors are OSErrors; ValueError for a malformed URL.
_NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, ValueError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _kind(path: Path) -> str:
    """"dir", "missing" or "other", from one stat (two checks could see a concurrent mkdir in between)."""
    try:
        return "dir" if stat.S_ISDIR(path.stat().st_mode) else "other"
    except (FileNotFoundError, NotADirectoryError):
        return "missing"


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return those this call created, outermost first."""
    missing: list[Path] = []
    p = folder
    while (kind := _kind(p)) != "dir":
        if kind == "other" or p == p.parent:  # a file (or device) where a folder must be
            raise _WriteFailed(f"create folder {folder}", f"{p} is not a folder")
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except FileExistsError:
            if d.is_dir():  # made meanwhile by a concurrent download: not ours to remove
                continue
            raise _undone(created, f"create folder {d}", "a file is in the way") from None
        except OSError as exc:
            raise _undone(created, f"create folder {d}", _reason(exc)) from None
        created.append(d)
    return created


def _remove_dirs(created: list[Path]) -> None:
    """Undo :func:`_make_dirs`, innermost first; a folder that is no longer empty (someone else's) stays."""
    for d in reversed(created):
        try:
            os.rmdir(d)
        except OSError:
            return


def _undone(created: list[Path], what: str, reason: str) -> _WriteFailed:
    """Remove the folders this attempt made, and the error to raise for ``what`` failing."""
    _remove_dirs(created)
    return _WriteFailed(what, reason)


def _open_part(dest: Path) -> tuple[list[Path], Path, BinaryIO]:
    """Create the folder of ``dest`` if needed and a temp file next to it with a name no other download uses."""
    created: list[Path] = []
    for attempt in range(3):
        created += _make_dirs(dest.parent)
        part = dest.with_name(f"{dest.name}.{secrets.token_hex(6)}.part")
        try:
            # 0o666 & ~umask, like any new file (mkstemp would make the archive private to its owner).
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileNotFoundError:  # a failing concurrent download removed the folder it had just made
            if attempt < 2:
                continue
            raise _undone(created, f"create a file in {dest.parent}", "the folder keeps disappearing") from None
        except OSError as exc:
            raise _undone(created, f"create a file in {dest.parent}", _reason(exc)) from None
        return created, part, os.fdopen(fd, "wb")
    raise AssertionError("unreachable")


def _copy_stream(resp: Any, out: Any, url: str, dest: Path, total: int | None, progress: bool | None) -> str:
    """Copy the response into ``out`` with a progress bar; return the md5 of what was written."""
    digest, got = hashlib.md5(), 0
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"downloading {dest.name}",
               disable=None if progress is None else not progress, leave=False)
    with bar:
        while True:
            try:
                chunk = resp.read(1 << 20)
            except _NETWORK_ERRORS as exc:
                raise _DownloadFailed(url, _reason(exc)) from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as exc:
                raise _WriteFailed(f"write into {dest.parent}", _reason(exc)) from None
            digest.update(chunk)
            got += len(chunk)
            bar.update(len(chunk))
    try:
        out.flush()
    except OSError as exc:
        raise _WriteFailed(f"write into {dest.parent}", _reason(exc)) from None
    # urllib does not always raise when the server closes early; a short file must not pass as "done".
    if total is not None and got != total:
        raise _DownloadFailed(url, f"connection closed after {got} of {total} bytes")
    return digest.hexdigest()


def download_archive(
    url: str, dest: str | Path, md5: str | None = CIFAR10_MD5, progress: bool | None = None
) -> Path:
    """Download ``url`` to ``dest``, streamed through a uniquely named ``.part`` file next to it and renamed only
    if its md5 matches (so concurrent downloads of the same archive both succeed).

    ``progress``: True/False forces the progress bar on/off; None shows it only on a terminal.
    ``md5`` None skips the check (e.g. a trusted mirror of a re-packed copy). Missing folders of ``dest`` are
    created only once the server answers. Raises DataError on network failure, checksum mismatch, or when the
    file cannot be written; no partial file and no folder this call created is left behind either way.
    """
    dest = Path(dest)
    created: list[Path] = []
    part: Path | None = None
    done = False
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S)
        except _NETWORK_ERRORS as exc:
            raise _DownloadFailed(url, _reason(exc)) from None
        with resp:
            length = resp.headers.get("Content-Length")
            created, part, out = _open_part(dest)
            try:
                actual = _copy_stream(resp, out, url, dest, int(length) if length and length.isdigit() else None,
                                      progress)
            finally:
                with suppress(OSError):  # flushed in _copy_stream: closing loses nothing
                    out.close()
        if md5 and actual != md5.lower():
            raise DataError(
                f"download from {url} has md5 {actual}, expected {md5}; the file was deleted "
                "(interrupted transfer or wrong URL?)"
            )
        try:
            os.replace(part, dest)  # atomic: a crash never leaves a half-written archive under the final name
        except OSError as exc:
            raise _WriteFailed(f"write {dest}", _reason(exc)) from None
        done = True
        return dest
    finally:  # also on KeyboardInterrupt: no .part, and no folder this call made, is left behind
        if not done:
            if part is not None:
                with suppress(OSError):
                    part.unlink(missing_ok=True)
            _remove_dirs(created)


# ----------------------------------------------------------------------------------------------------
# Reading batches


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The batches are pickles; allow only what a numpy array needs, so a hostile file cannot run code."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),  # written by numpy < 2 (the official archive)
            ("numpy._core.multiarray", "_reconstruct"),  # written by numpy >= 2
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # how Python 3 writes bytes in protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(f: BinaryIO) -> Any:
    # encoding="bytes": the original Python 2 pickles store str keys/data that must stay bytes.
    return _NumpyOnlyUnpickler(f, encoding="bytes").load()


# Errors that mean "the bytes are damaged", from gzip, zlib, tarfile or pickle.
_CORRUPT = (
    tarfile.TarError,
    EOFError,
    zlib.error,
    gzip.BadGzipFile,
    pickle.UnpicklingError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    MemoryError,
)


def _check_batch(obj: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one unpickled batch; return (data (N, 3072) uint8, labels (N,) int64)."""
    if not isinstance(obj, dict):
        raise DataError(
            f"{where}: expected a pickled dict with keys 'data' and 'labels', got {type(obj).__name__}"
        )
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    missing = [k for k in ("data", "labels") if k not in d]
    if missing:
        raise DataError(
            f"{where}: missing key(s) {', '.join(missing)}; expected a CIFAR-10 batch with data and labels"
        )
    data = d["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' is {got}, expected uint8 of shape (N, {_ROW})")
    try:
        labels = np.asarray(d["labels"])
    except (ValueError, TypeError):
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise DataError(f"{where}: 'labels' must be {len(data)} integers, got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(
            f"{where}: labels must be in 0..{len(CLASSES) - 1}, found {labels.min()}..{labels.max()}"
        )
    return data, labels.astype(np.int64)


def _require_folder_files(folder: Path) -> None:
    for name in TRAIN_BATCHES + TEST_BATCHES:
        if not (folder / name).is_file():
            raise DataError(
                f"folder {folder} has no file {name}; expected {', '.join(TRAIN_BATCHES + TEST_BATCHES)}"
            )


def _read_folder(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    _require_folder_files(folder)
    batches = {}
    for name in TRAIN_BATCHES + TEST_BATCHES:
        path = folder / name
        try:
            with open(path, "rb") as f:
                obj = _unpickle(f)
        except _CORRUPT as exc:
            raise DataError(
                f"file {path} is truncated or corrupt ({_short(exc)}); expected a batch of the official {ARCHIVE_NAME}"
            ) from None
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
        batches[name] = _check_batch(obj, str(path))
    return batches


def _tar_members(tf: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo]]:
    for member in tf:
        name = member.name
        while name.startswith("./"):  # re-packed archives made with `tar -C dir .`
            name = name[2:]
        folder, _, base = name.rpartition("/")
        if member.isfile() and folder == FOLDER_NAME:
            yield base, member


# How the formats tarfile's "r|*" reads begin: gzip, bzip2, xz; a plain tar has "ustar" at offset 257.
_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


def _check_is_archive(archive: Path) -> None:
    """A file that is not even a compressed/tar file is someone else's file, not a damaged archive of ours."""
    try:
        with open(archive, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise DataError(f"cannot read archive {archive}: {exc.strerror or exc}") from None
    if head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar":
        return
    what = "an empty file" if not head else "not a gzip, bzip2, xz or tar file"
    raise DataError(f"{archive} is not a CIFAR-10 archive ({what}); {_EXPECTED}")


def _read_archive(archive: Path, ours: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode the batches of ``archive``. ``ours``: cifarlab downloaded it, so deleting it is the right advice."""
    _check_is_archive(archive)
    wanted = set(TRAIN_BATCHES + TEST_BATCHES)
    batches = {}
    try:
        # Stream mode ("r|*"): one sequential pass over the gzip (random access into a .tar.gz re-inflates).
        with tarfile.open(archive, mode="r|*", bufsize=1 << 20) as tf:
            for base, member in _tar_members(tf):
                if base not in wanted:
                    continue
                f = tf.extractfile(member)
                if f is None:
                    continue
                where = f"archive {archive} member {FOLDER_NAME}/{base}"
                batches[base] = _check_batch(_unpickle(f), where)
    except _CORRUPT as exc:
        advice = "delete it and download again" if ours else f"expected the official {ARCHIVE_NAME}"
        raise DataError(f"archive {archive} is truncated or corrupt ({_short(exc)}); {advice}") from None
    except OSError as exc:
        raise DataError(f"cannot read archive {archive}: {exc.strerror or exc}") from None
    missing = [n for n in TRAIN_BATCHES + TEST_BATCHES if n not in batches]
    if missing:
        raise DataError(
            f"archive {archive} has no member {FOLDER_NAME}/{missing[0]}"
            + (f" (nor {', '.join(missing[1:])})" if len(missing) > 1 else "")
            + f"; expected the official layout {FOLDER_NAME}/data_batch_1..5 and test_batch"
        )
    return batches


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _assemble(
    batches: dict[str, tuple[np.ndarray, np.ndarray]], where: str, expected_sizes: tuple[int, int]
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    parts = (("train", TRAIN_BATCHES, expected_sizes[0]), ("test", TEST_BATCHES, expected_sizes[1]))
    for split, names, expected in parts:
        total = sum(len(batches[n][0]) for n in names)
        if total != expected:
            label = "data_batch_1..5" if split == "train" else "test_batch"
            raise DataError(f"{where}: {label} hold {total} images in total, expected {expected}")
        # One concatenate + reshape: the (N, 3072) rows are already R, G, B planes of 32x32 row-major.
        x = np.concatenate([batches[n][0] for n in names]).reshape(total, *IMAGE_SHAPE)
        y = np.concatenate([batches[n][1] for n in names])
        out[f"{split}_x"] = torch.from_numpy(np.ascontiguousarray(x))
        out[f"{split}_y"] = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
    return out


# ----------------------------------------------------------------------------------------------------
# Cache


def _fingerprint(kind: str, path: Path, expected_sizes: tuple[int, int]) -> str:
    """Hash of what identifies the source: resolved path, size and mtime of the archive or each batch file."""
    h = hashlib.sha256(f"cifarlab-cache-v{_CACHE_FORMAT}|{kind}|{path}|{expected_sizes}".encode())
    files = [path] if kind == "archive" else [path / n for n in TRAIN_BATCHES + TEST_BATCHES]
    for f in files:
        st = f.stat()
        h.update(f"|{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _load_cache(path: Path, expected_sizes: tuple[int, int]) -> dict[str, torch.Tensor] | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        n_train, n_test = expected_sizes
        want = {
            "train_x": (torch.uint8, (n_train, *IMAGE_SHAPE)),
            "train_y": (torch.int64, (n_train,)),
            "test_x": (torch.uint8, (n_test, *IMAGE_SHAPE)),
            "test_y": (torch.int64, (n_test,)),
        }
        for key, (dtype, shape) in want.items():
            t = obj[key]
            if not isinstance(t, torch.Tensor) or t.dtype != dtype or tuple(t.shape) != shape:
                return None
        return {key: obj[key].contiguous() for key in want}
    # A damaged cache is never fatal, whatever torch.load raises for it: it is rebuilt from the source.
    except Exception:
        return None


def _save_cache(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temp file in the same directory, then os.replace: readers see the old file or the complete new one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(tensors, f)
        os.replace(tmp, path)
        tmp = None
    # A read-only, full or misplaced cache dir only costs speed next time: one line on stderr, not a Python
    # warning (which prints its source line too). RuntimeError: torch's writer reports failed writes so.
    except (OSError, RuntimeError) as exc:
        reason = _reason(exc) if isinstance(exc, OSError) else _short(exc)
        print(
            f"cifarlab: warning: could not write the CIFAR-10 cache in {path.parent} ({reason}); continuing without it",
            file=sys.stderr,
        )
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------
# Entry point


def _locate(data_dir: Path) -> tuple[str, Path] | None:
    """Find a local source under ``data_dir``: ("folder", path) or ("archive", path), or None."""
    if data_dir.is_file():
        return "archive", data_dir
    if data_dir.is_dir() and any((data_dir / n).is_file() for n in TRAIN_BATCHES + TEST_BATCHES):
        return "folder", data_dir  # data_dir is the extracted cifar-10-batches-py folder itself
    if (data_dir / FOLDER_NAME).is_dir():
        return "folder", data_dir / FOLDER_NAME
    if (data_dir / ARCHIVE_NAME).is_file():
        return "archive", data_dir / ARCHIVE_NAME
    return None


def _check_data_dir(data_dir: Path) -> None:
    """Reject a data dir that exists as something other than a folder or archive, or lies under a file."""
    try:
        mode = data_dir.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as exc:
        raise DataError(f"cannot access data dir {data_dir}: {exc.strerror or exc}; {_EXPECTED}") from None
    if mode is not None:
        if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
            return
        kind = next(
            (name for test, name in _FILE_KINDS if test(mode)),
            "special file",
        )
        raise DataError(f"data dir {data_dir} is a {kind}, not a folder; {_EXPECTED}")
    for parent in data_dir.parents:
        kind = _kind(parent)
        if kind == "dir":
            return
        if kind == "other":
            raise DataError(f"data dir {data_dir} cannot exist: {parent} is a file, not a folder; {_EXPECTED}")


_FILE_KINDS = (
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
    (stat.S_ISFIFO, "named pipe"),
    (stat.S_ISSOCK, "socket"),
)


def _is_download_location(path: Path) -> bool:
    """Whether ``path`` is where cifarlab downloads the archive by default (so cifarlab put it there)."""
    return path == (default_data_dir() / ARCHIVE_NAME).resolve()


def load_cifar10(
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool | None = None,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
    cache_dir: str | Path | None = None,
    expected_sizes: tuple[int, int] = (50000, 10000),
) -> CifarArrays:
    """Load CIFAR-10 as uint8 tensors, from the cache, a local folder/archive, or a download.

    ``data_dir``: a directory holding ``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``, the extracted
    folder itself, or an archive file; None means :func:`default_data_dir`. ``cache_dir``: where decoded
    tensors are cached (None: :func:`default_cache_dir`). ``expected_sizes``: (train, test) totals the batches
    must hold.
    Raises DataError (one line) when nothing usable is found or the data is malformed.
    """
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    found = _locate(data_dir)
    downloaded = ""
    if found is None:
        _check_data_dir(data_dir)
        if data_dir.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise DataError(f"archive {data_dir} does not exist; expected the CIFAR-10 python archive")
        looked = f"CIFAR-10 not found in {data_dir} (looked for {FOLDER_NAME}/ and {ARCHIVE_NAME})"
        advice = "Put the archive there or pass --data-dir."
        if not download:
            raise DataError(f"{looked} and downloading is disabled. {advice}")
        try:
            archive = download_archive(url, data_dir / ARCHIVE_NAME, md5=md5, progress=progress)
        except _DownloadFailed as exc:
            raise DataError(f"{looked} and download from {url} failed: {exc.reason}. {advice}") from None
        except _WriteFailed as exc:
            raise DataError(f"{looked} and the download cannot be saved: {exc}. {advice}") from None
        found = ("archive", archive)
        downloaded = f" (downloaded from {url})"

    kind, path = found
    path = path.resolve()
    where = f"{kind} {path}{downloaded}"
    if kind == "folder":
        _require_folder_files(path)  # before fingerprinting, which stats every batch file
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_file = cache_dir / f"cifar10-{_fingerprint(kind, path, expected_sizes)}.pt"

    tensors = _load_cache(cache_file, expected_sizes)
    if tensors is not None:
        return CifarArrays(**tensors, source=f"cache {cache_file} (from {where})")

    if kind == "folder":
        batches = _read_folder(path)
    else:
        batches = _read_archive(path, ours=bool(downloaded) or _is_download_location(path))
    tensors = _assemble(batches, f"{kind} {path}", expected_sizes)
    del batches
    _save_cache(cache_file, tensors)
    return CifarArrays(**tensors, source=where)


__all__ = [
    "CIFAR10_MD5",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR10_URL",
    "CLASSES",
    "CifarArrays",
    "default_cache_dir",
    "default_data_dir",
    "download_archive",
    "load_cifar10",
]
