"""Artifacts: what a run read or wrote, identified by the SHA-256 of its content.

``describe(path_or_uri)`` hashes a local file (streamed, 1 MiB at a time), a directory
(a manifest of every file, its SHA-256 the identity of the directory) or takes a URI as
given (credentials removed, nothing downloaded). ``table(values)`` turns the stored
records into the Arrow table ``Store.artifacts()`` returns. Record layout in
docs/FORMAT.md, "Artifacts".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.ipc  # noqa: F401  (pa.ipc)

from .errors import InvalidArgumentError, InvalidTypeError, NotFoundError
from .secrets import is_secret_name

ROLES = ("input", "output", "model", "code", "checkpoint", "other")
KINDS = ("file", "dir", "uri")
MANIFEST_VERSION = 1
PAGE_ROWS = 1024   # artifacts an artifact_pages value holds (the last page fills up first)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PATH_PARAM = re.compile(r";([^;/=]+)=[^;/]*")   # ;jsessionid=... in a path segment
# Query parameters dropped from a URI: presigned URLs carry their credentials there
# (X-Amz-Signature, X-Amz-Credential, X-Goog-Signature, Azure's sig, access_token, ...).
TIME_TYPE = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([("run_id", pa.string()), ("seq", pa.int64()), ("name", pa.string()), ("role", pa.string()),
                    ("kind", pa.string()), ("location", pa.string()), ("size", pa.int64()), ("mtime", TIME_TYPE),
                    ("sha256", pa.string()), ("etag", pa.string()), ("stored", pa.bool_()),
                    ("logged", TIME_TYPE)])


class FileEntry(NamedTuple):
    """One file of an artifact: where it is read from, and what it holds."""

    path: str        # relative posix path inside a directory ("" for a file artifact)
    source: str      # absolute path to read it from
    size: int
    sha256: str


class Described(NamedTuple):
    """An artifact before it is stored: the fields of its record, and its files."""

    fields: dict                 # name, kind, location, size, mtime, sha256, etag
    files: list[FileEntry]       # the bytes copy=True stores (none for a URI)
    manifest: bytes | None       # a directory's manifest, canonical JSON


def is_uri(value: str) -> bool:
    return bool(_URI.match(value))


def hash_file(path: str) -> tuple[str, int]:
    """(SHA-256 hex, size) of a file's content, read 1 MiB at a time."""
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
        return digest.hexdigest(), f.tell()


def describe(path_or_uri, hash: str | None = None) -> Described:
    """The record fields and files of a local file, a directory or a URI. Errors name
    ``path_or_uri`` (missing, unreadable, not a regular file, a symlink loop) or
    ``hash`` (not what the content hashes to)."""
    if isinstance(path_or_uri, str) and is_uri(path_or_uri) and not path_or_uri.lower().startswith("file://"):
        return _describe_uri(path_or_uri, hash)
    if isinstance(path_or_uri, str) and path_or_uri.lower().startswith("file://"):
        path_or_uri = urlsplit(path_or_uri).path
    if not isinstance(path_or_uri, (str, os.PathLike)):
        raise InvalidTypeError("path_or_uri", f"must be a path or a URI, got {type(path_or_uri).__name__}")
    if not os.fspath(path_or_uri):   # abspath("") would be the working directory
        raise InvalidArgumentError("path_or_uri", "is empty")
    path = os.path.abspath(os.fspath(path_or_uri))
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise NotFoundError(f"path_or_uri: no file or directory {path}") from None
    except OSError as exc:
        raise InvalidArgumentError("path_or_uri", f"{path}: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        found = _describe_dir(path, info)
    else:
        entry = _file_entry(path, "", info, path)
        found = Described({"kind": "file", "location": path, "size": entry.size, "mtime": info.st_mtime_ns,
                           "sha256": entry.sha256, "etag": None}, [entry], None)
    if hash is not None and _hex64(hash) != found.fields["sha256"]:
        raise InvalidArgumentError("hash", f"{path} hashes to {found.fields['sha256']}, not {hash}")
    return found


def _file_entry(source: str, relative: str, info: os.stat_result, shown: str) -> FileEntry:
    if not stat.S_ISREG(info.st_mode):
        raise InvalidArgumentError("path_or_uri", f"{shown} is not a regular file or directory "
                                   f"({_file_type(info.st_mode)})")
    try:
        sha, size = hash_file(source)
    except OSError as exc:
        raise InvalidArgumentError("path_or_uri", f"{shown}: {exc.strerror}") from None
    return FileEntry(relative, source, size, sha)


def _describe_dir(root: str, info: os.stat_result) -> Described:
    files: list[FileEntry] = []
    newest = 0
    # Depth first, following symlinks (a link records its target's content); the
    # directories on the way down are kept by (device, inode) to refuse a loop.
    stack = [(root, "", ((info.st_dev, info.st_ino),))]
    while stack:
        folder, prefix, ancestors = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise InvalidArgumentError("path_or_uri", f"{folder}: {exc.strerror}") from None
        for entry in entries:
            relative = prefix + entry.name
            try:
                found = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                raise InvalidArgumentError("path_or_uri", f"{entry.path} is a symlink to nothing "
                                           f"({os.readlink(entry.path)!r})") from None
            except OSError as exc:
                raise InvalidArgumentError("path_or_uri", f"{entry.path}: {exc.strerror}") from None
            if stat.S_ISDIR(found.st_mode):
                if (found.st_dev, found.st_ino) in ancestors:
                    raise InvalidArgumentError("path_or_uri", f"{entry.path} links back to a directory above "
                                               "it (a symlink loop)")
                stack.append((entry.path, relative + "/", ancestors + ((found.st_dev, found.st_ino),)))
                continue
            files.append(_file_entry(entry.path, relative, found, entry.path))
            newest = max(newest, found.st_mtime_ns)
    files.sort(key=lambda f: f.path)
    manifest = manifest_bytes(files)
    return Described({"kind": "dir", "location": root, "size": sum(f.size for f in files),
                      "mtime": newest or info.st_mtime_ns, "sha256": hashlib.sha256(manifest).hexdigest(),
                      "etag": None}, files, manifest)


def manifest_bytes(files) -> bytes:
    """A directory's manifest in its canonical form: compact JSON (sorted keys, no
    spaces, non-ASCII escaped) of {"files": [{"path", "sha256", "size"}, ...] sorted by
    path, "version": 1}. Its SHA-256 is the directory's."""
    rows = [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in files]
    return json.dumps({"files": rows, "version": MANIFEST_VERSION}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def parse_manifest(data: bytes, where: str) -> list[dict]:
    """The file rows of a stored manifest; paths that would leave the directory refused."""
    from .errors import CorruptionError

    try:
        rows = json.loads(data)["files"]
        for row in rows:
            parts = row["path"].split("/")
            if row["path"].startswith("/") or any(p in ("", ".", "..") for p in parts):
                raise ValueError(f"path {row['path']!r}")
            _hex64(row["sha256"])
    except (ValueError, KeyError, TypeError, InvalidArgumentError) as exc:
        raise CorruptionError(where, 0, f"not a directory manifest: {exc}") from None
    return rows


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a file"


def _hex64(value) -> str | None:
    text = value.lower() if isinstance(value, str) else ""
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text
    return None


def _describe_uri(uri: str, hash) -> Described:
    if hash is not None and not isinstance(hash, str):
        raise InvalidArgumentError("hash", f"must be a str (a SHA-256 or an ETag), got {type(hash).__name__}")
    sha = _hex64(hash) if hash is not None else None
    return Described({"kind": "uri", "location": clean_uri(uri), "size": None, "mtime": None, "sha256": sha,
                      "etag": hash if hash is not None and sha is None else None}, [], None)


def clean_uri(uri: str) -> str:
    """``uri`` without credentials: no user:password@, and no parameter whose name may
    hold a secret (engine/secrets.py: token, signature, key, secret, password, auth,
    session, ...; and Azure's ``code``), in the query, in ``;name=value`` path
    parameters or in a fragment of name=value pairs (OAuth's ``#access_token=``)."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        port = parts.port
    except ValueError as exc:
        raise InvalidArgumentError("path_or_uri", f"not a URI: {exc}") from None
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    path = _PATH_PARAM.sub(lambda m: "" if _secret_pair(m.group(1)) else m.group(0), parts.path)
    fragment = _kept_pairs(parts.fragment) if "=" in parts.fragment else parts.fragment
    return urlunsplit((parts.scheme, netloc, path, _kept_pairs(parts.query), fragment))


def _secret_pair(pair: str) -> bool:
    name = pair.split("=", 1)[0]
    return is_secret_name(name) or name.lower() in ("code", "pwd")   # Azure's key; a password, not $PWD


def _kept_pairs(text: str) -> str:
    kept = [(k, v) for k, v in parse_qsl(text, keep_blank_values=True) if not _secret_pair(k)]
    return urlencode(kept, quote_via=quote, safe="/")


def default_name(fields: dict) -> str:
    """A file's or directory's base name; a URI's last path segment (else its host)."""
    location = fields["location"]
    if fields["kind"] == "uri":
        parts = urlsplit(location)
        return parts.path.rstrip("/").rsplit("/", 1)[-1] or parts.hostname or location
    return os.path.basename(location.rstrip(os.sep)) or location


def table(values: list[bytes]) -> pa.Table:
    """The artifacts table of stored records (JSON bytes), parsed in one call."""
    return page_of(json.loads(b"[" + b",".join(values) + b"]"))


def page_of(records: list[dict]) -> pa.Table:
    """Artifact records (dicts) as rows of SCHEMA."""
    columns = {}
    for field in SCHEMA:
        name = "run" if field.name == "run_id" else field.name
        raw = [r.get(name) for r in records]
        if field.type == TIME_TYPE:
            columns[field.name] = pa.array([None if v is None else v // 1000 for v in raw], TIME_TYPE)
        else:
            columns[field.name] = pa.array(raw, field.type)
    return pa.table(columns, schema=SCHEMA)


def encode_page(rows: pa.Table) -> bytes:
    """An Arrow IPC stream of one record batch of SCHEMA (docs/FORMAT.md, "Artifacts")."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, SCHEMA) as writer:
        writer.write_table(rows, max_chunksize=PAGE_ROWS)
    return sink.getvalue().to_pybytes()


def decode_page(data: bytes) -> pa.Table:
    """The rows of a page; ValueError when it is no stream of SCHEMA."""
    try:
        rows = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"artifact page does not read as Arrow IPC: {exc}") from None
    if not rows.schema.equals(SCHEMA):
        raise ValueError("artifact page of another schema")
    return rows


def whole_table(pages: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(pages) if pages else SCHEMA.empty_table()


def restore(blobs, sha256: str, dest: str, kind: str) -> str:
    """Write the stored artifact ``sha256`` to ``dest``: a file (``kind`` "file"), or the
    directory its manifest lists (``kind`` "dir"). Everything is written under a
    temporary name beside ``dest`` and checked before the rename, so ``dest`` appears
    whole or not at all."""
    import secrets
    import shutil

    from .blobs import READ_CHUNK

    temp = os.path.join(os.path.dirname(dest), f".{os.path.basename(dest)}.{secrets.token_hex(4)}.restore")

    def write_file(sha: str, path: str, shown: str) -> None:
        try:
            reader = blobs.open(sha)
        except NotFoundError:
            raise NotFoundError(f"sha256: {shown} is not stored (logged without copy=True)") from None
        with reader, open(path, "xb") as out:
            for chunk in iter(lambda: reader.read(READ_CHUNK), b""):
                out.write(chunk)

    try:
        if kind == "dir":
            manifest = parse_manifest(blobs.get(sha256), blobs.layout.blob_path(sha256))
            os.mkdir(temp)
            for row in manifest:
                target = os.path.join(temp, *row["path"].split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                write_file(row["sha256"], target, f"file {row['path']!r} of directory {sha256}")
        else:
            write_file(sha256, temp, f"artifact {sha256}")
        os.rename(temp, dest)
    except BaseException:
        if os.path.isdir(temp):
            shutil.rmtree(temp, ignore_errors=True)
        elif os.path.lexists(temp):
            os.unlink(temp)
        raise
    return dest
