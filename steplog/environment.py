"""What made a run: code, interpreter, packages, machine, GPUs and job variables.

``capture()`` is called once per run (``Store.start_run(capture=...)``). It returns a
``Captured``: a small ``record`` that goes into the run record, and ``blobs`` (sha256 hex
-> bytes) that the store keeps once per content, so ten thousand runs started from one
environment store their package list, machine description and code state once.

    record = {"shared": "<sha256 of the shared blob>",   # every captured part but what follows
              "argv": ["train.py", "--lr", "0.1"],        # "script": the part that differs between runs
              "env": {"LOCAL_RANK": "0", "RANK": "0"}}    # "env": ranks and ids (ENV_PER_PROCESS), if any

The shared blob is compact JSON (sorted keys) holding ``python``, ``gpus``, ``git``
(commit, branch, remote, dirty flag, the sha256 and size of the uncommitted diff, the
untracked files), ``script`` (path, module, working directory) and ``env`` (the other
allow-listed variables: ``ENV_NAMES``, ``ENV_PREFIXES``) inline, and the
sha256 of three more blobs: the package list (text, one ``name==version`` a line), the
machine description (JSON) and the diff text (up to ``DIFF_LIMIT`` bytes; a larger diff
keeps only its hash and size). ``describe(record, get_blob)`` puts it all back together.

Secrets never leave this module: variables and arguments whose names look secret
(``is_secret_name``) are left out or masked, credentials in URLs are removed
(``strip_credentials``), and the value of every secret-named environment variable (8
characters or more) is masked wherever else it shows up (argv, diff, remotes).

Cost: everything that cannot change within a process (python, packages, machine, gpus)
is read once per process. Git state is read once per repository and read again only
when ``HEAD``, the index, the branch ref, ``packed-refs``, the config or (in a
repository of at most ``WATCH_FILES`` tracked files) a tracked file change: a commit, a
checkout, a ``git add``, an edit saved from a notebook. In a larger repository an edit
of a tracked file that is not staged after the first capture of a process is NOT seen,
so a later run of that process may carry a stale dirty flag and diff. ``reset_cache()`` forgets everything. Safe to call from several
threads and after ``fork()``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading

from .engine.errors import CorruptionError, InvalidArgumentError, InvalidTypeError
from .engine.secrets import is_secret_name

__all__ = ["CAPTURE_ALL", "Captured", "capture", "describe", "is_secret_name", "strip_credentials", "reset_cache",
           "ENV_NAMES", "ENV_PREFIXES", "ENV_PER_PROCESS", "DIFF_LIMIT"]

CAPTURE_ALL = ("git", "script", "python", "packages", "machine", "gpus", "env")

# Job variables worth keeping: device selection, distributed ranks, schedulers, threads,
# determinism. Secret-looking names are dropped even when they match.
ENV_NAMES = frozenset({
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES",
    "CUDA_LAUNCH_BLOCKING", "CUBLAS_WORKSPACE_CONFIG", "PYTORCH_CUDA_ALLOC_CONF",
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "NODE_RANK",
    "MASTER_ADDR", "MASTER_PORT",
    "SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NODELIST",
    "SLURM_JOB_NODELIST", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS", "SLURM_NNODES",
    "SLURM_RESTART_COUNT", "PBS_JOBID", "LSB_JOBID",
    "POD_NAME", "POD_NAMESPACE", "NODE_NAME", "JOB_COMPLETION_INDEX",   # Kubernetes downward API, indexed Jobs
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
    "PYTHONHASHSEED", "XLA_FLAGS",
})
ENV_PREFIXES = ("NCCL_", "TORCH_", "TORCHELASTIC_")
# Those that number this process or task within its job go in the record; the job's
# configuration (world size, NCCL settings, threads...) goes in the shared blob, so the
# ranks of one job, or the tasks of one array job, share it.
ENV_PER_PROCESS = frozenset({
    "RANK", "LOCAL_RANK", "GROUP_RANK", "ROLE_RANK", "NODE_RANK", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID",
    "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "PBS_JOBID", "LSB_JOBID", "POD_NAME", "JOB_COMPLETION_INDEX",
})
DIFF_LIMIT = 1 << 20            # diff text stored up to this many bytes; larger: hash and size only
UNTRACKED_LIMIT = 100           # untracked names listed (the count is always kept)
GIT_TIMEOUT = 3.0               # seconds, each git command
GPU_TIMEOUT = 5.0               # seconds, nvidia-smi (a cold driver takes a while)
MASK = "***"


@dataclasses.dataclass(frozen=True)
class Captured:
    """``record``: small and JSON-able, for the run record. ``blobs``: sha256 hex ->
    bytes, to store once per content (``Store.put_blob``)."""
    record: dict
    blobs: dict


def capture(what=CAPTURE_ALL, cwd=None) -> Captured:
    """The environment of this process now. ``what``: True or None for every part of
    ``CAPTURE_ALL``, False for none, or a list/tuple of part names. ``cwd``: where to
    look for the git repository (default: the entry script's folder, else the working
    directory: where the script is an installed tool or lies in no repository). Parts that cannot be read (no git, not a repository, no GPU) are left
    out; capture never fails for them."""
    parts = _parts_arg(what)
    if cwd is not None and not isinstance(cwd, (str, os.PathLike)):
        raise InvalidTypeError("cwd", f"expected a path, got {type(cwd).__name__}")
    with _lock:
        return _capture(parts, None if cwd is None else os.fspath(cwd))


def describe(record: dict, get_blob) -> dict:
    """The environment a ``capture()`` record describes, blobs resolved with
    ``get_blob(sha256) -> bytes``: {"git", "script", "python", "packages" (name ->
    version), "machine", "gpus", "env"}, each only if captured. The git part's "diff"
    is the diff text, or None where it was too big to keep."""
    if not isinstance(record, dict):
        raise InvalidTypeError("record", f"expected a dict, got {type(record).__name__}")
    shared = _json_blob(get_blob, record["shared"]) if "shared" in record else {}
    out = {}
    for part in CAPTURE_ALL:
        if part in shared:
            out[part] = _DESCRIBE[part](shared.get(part), record, get_blob)
    return out


def reset_cache() -> None:
    """Forget what was read before: the next capture reads everything again."""
    with _lock:
        _cache.clear()
        _git_cache.clear()


# -- secrets ---------------------------------------------------------------------------

# is_secret_name (engine/secrets.py): one rule for variables, arguments and URLs


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>[^/?#\s]*)@")
_QUERY_VALUE = re.compile(r"(?P<lead>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]*)")
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git", "sftp"})


def strip_credentials(text: str) -> str:
    """``text`` with credentials taken out of every URL in it: the user-info part
    (``https://user:token@host/x`` -> ``https://host/x``; an ssh user without a password,
    ``ssh://git@host/x``, is kept) and the values of secret-named query parameters
    (``?X-Amz-Signature=...`` -> ``?X-Amz-Signature=***``)."""
    if "@" not in text and "=" not in text:
        return text

    def userinfo(m):
        keep = m["scheme"].lower() in _SSH_SCHEMES and ":" not in m["userinfo"]
        return m[0] if keep else m["scheme"] + "://"

    def query(m):
        return m["lead"] + MASK if is_secret_name(m["name"]) and m["value"] else m[0]

    text = _USERINFO.sub(userinfo, text)
    return _QUERY_VALUE.sub(query, text) if "://" in text else text


def _scan_environ() -> tuple:
    """(values of the secret-named variables long enough to look for elsewhere, longest
    first; names of the allow-listed variables that are not secret). One pass over the
    names, each classified once: reading every value of os.environ costs more than the
    rest of a capture."""
    secrets, kept = set(), []
    for name in os.environ:
        kind = _env_kind(name)
        if kind == _SECRET:
            value = os.environ.get(name, "")
            if len(value) >= 8:
                secrets.add(value)
        elif kind == _KEPT:
            kept.append(name)
    return tuple(sorted(secrets, key=len, reverse=True)), kept


_SECRET, _KEPT, _OTHER = range(3)


@functools.lru_cache(maxsize=4096)
def _env_kind(name: str) -> int:
    if is_secret_name(name):
        return _SECRET
    return _KEPT if name in ENV_NAMES or name.startswith(ENV_PREFIXES) else _OTHER


def _scrub(text: str, secrets: tuple) -> str:
    """``text`` without credentials or secret values, and without the lone surrogates
    that undecodable bytes of argv or paths leave (JSON could not encode them)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = strip_credentials(text)
    for value in secrets:
        if value in text:
            text = text.replace(value, MASK)
    return text


def _scrub_bytes(data: bytes, secrets: tuple) -> bytes:
    for value in secrets:
        encoded = value.encode("utf-8", "surrogateescape")
        if encoded in data:
            data = data.replace(encoded, MASK.encode())
    return data


def _mask_argv(argv: list, secrets: tuple) -> list:
    """argv with the values of secret-named options masked: ``--token=x``,
    ``--token x``, ``db.password=x`` (Hydra); every item scrubbed."""
    out, mask_next = [], False
    for arg in argv:
        if mask_next and not arg.startswith("--"):
            out.append(MASK)
            mask_next = False
            continue
        mask_next = False
        name, eq, _ = arg.lstrip("-").partition("=")
        if name and is_secret_name(name) and (eq or arg.startswith("-")):
            if eq:
                out.append(arg.partition("=")[0] + "=" + MASK)
            else:
                out.append(arg)
                mask_next = True
            continue
        out.append(_scrub(arg, secrets))
    return out


# -- git -------------------------------------------------------------------------------

def _git(where: str, *args: str) -> subprocess.CompletedProcess | None:
    """A git command in ``where``; None where git is missing or too slow. Optional locks
    are off: ``git status`` must not rewrite the index under the user's own git."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", GIT_TERMINAL_PROMPT="0")
    try:
        return subprocess.run(("git", "--no-pager") + args, cwd=where, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=GIT_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def _git_part(where: str, secrets: tuple):
    """(section, {sha: blob}) of the repository holding ``where``, from the cache while
    its fingerprint holds; None where there is no repository or no git."""
    cached = _git_cache.get(where)
    if cached is not None and (cached[0] is None or cached[0] == _fingerprint(cached[1])):
        return cached[2]
    paths = _git_paths(where)
    if paths is None:
        _git_cache[where] = (None, None, None)
        return None
    before = _fingerprint(paths)
    result = _read_git(where, paths, secrets)
    _git_cache[where] = (before, paths, result)
    return result


def _git_paths(where: str) -> dict | None:
    done = _git(where, "rev-parse", "--show-toplevel", "--absolute-git-dir", "--git-common-dir", "HEAD")
    lines = done.stdout.decode("utf-8", "replace").split("\n") if done is not None else []
    if len(lines) < 4 or not os.path.isabs(lines[1]):
        return None                                   # not a repository (or no git)
    head = lines[3] if done.returncode == 0 else None   # None: a repository without commits
    gitdir, common = lines[1], os.path.join(where, lines[2])
    try:
        with open(os.path.join(gitdir, "HEAD"), encoding="utf-8") as f:
            ref = f.read().strip()
    except OSError:
        ref = ""
    branch = ref[len("ref: refs/heads/"):] if ref.startswith("ref: refs/heads/") else None
    watched = [os.path.join(gitdir, "HEAD"), os.path.join(gitdir, "index"), os.path.join(common, "packed-refs"),
               os.path.join(common, "config")] + _tracked_files(where, lines[0])
    if ref.startswith("ref: "):
        watched.append(os.path.join(common, ref[5:]))
    return {"top": lines[0], "commit": head, "branch": branch, "watched": watched}


def _tracked_files(where: str, top: str) -> list[str]:
    """The tracked files, when few enough to stat at every capture (about 1 us each)."""
    done = _git(where, "ls-files", "-z")
    if done is None or done.returncode != 0:
        return []
    names = [n for n in done.stdout.decode("utf-8", "surrogateescape").split("\0") if n]
    return [os.path.join(top, n) for n in names] if len(names) <= WATCH_FILES else []


def _fingerprint(paths: dict) -> tuple:
    out = []
    for path in paths["watched"]:
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def _read_git(where: str, paths: dict, secrets: tuple):
    section = {"commit": paths["commit"], "branch": paths["branch"]}
    remote = _git_remote(where)
    if remote is not None:
        section["remote"] = _scrub(remote, secrets)
    blobs = {}
    status = _git(where, "status", "--porcelain=v1", "-z", "--untracked-files=normal")
    if status is not None and status.returncode == 0:
        dirty, untracked = _parse_status(status.stdout)
        section.update(dirty=dirty, untracked=len(untracked),
                       untracked_names=[_scrub(n, secrets) for n in untracked[:UNTRACKED_LIMIT]])
        if dirty and paths["commit"] is not None:
            section.update(_git_diff(where, secrets, blobs))
    return section, blobs


def _git_remote(where: str) -> str | None:
    """The URL of remote "origin", else of the first remote."""
    done = _git(where, "config", "--get-regexp", r"^remote\..*\.url$")
    if done is None or done.returncode != 0:
        return None
    urls = {}
    for line in done.stdout.decode("utf-8", "replace").splitlines():
        key, _, url = line.partition(" ")
        urls.setdefault(key[len("remote."):-len(".url")], url)
    return urls.get("origin", next(iter(urls.values()), None))


def _parse_status(out: bytes) -> tuple:
    """(dirty, untracked names) from ``git status --porcelain=v1 -z``: dirty means a
    tracked change, staged or not; untracked files alone do not make a tree dirty."""
    dirty, untracked = False, []
    entries = out.split(b"\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        if entry[:2] == b"??":
            untracked.append(entry[3:].decode("utf-8", "replace"))
        else:
            dirty = True
            if entry[0:1] in (b"R", b"C"):
                i += 1                                    # a rename's origin follows
    return dirty, untracked


def _git_diff(where: str, secrets: tuple, blobs: dict) -> dict:
    """The uncommitted diff against HEAD: its sha256 and size always, its text as a blob
    up to DIFF_LIMIT bytes (secret values masked: then ``diff_masked``)."""
    done = _git(where, "diff", "--no-color", "--no-ext-diff", "HEAD")
    if done is None or done.returncode != 0:
        return {"diff_error": "git diff failed" if done is not None else "git diff timed out"}
    text = done.stdout
    out = {"diff_sha256": hashlib.sha256(text).hexdigest(), "diff_bytes": len(text)}
    if len(text) <= DIFF_LIMIT:
        kept = _scrub_bytes(text, secrets)
        if kept is not text:
            out["diff_masked"] = True
        out["diff_blob"] = _put(blobs, kept)
    return out


# -- script, python, packages, machine, gpus, env --------------------------------------

def _script_part(secrets: tuple) -> tuple:
    """({path, module, cwd}, argv): the entry script resolved ("-c" for python -c,
    "<interactive>" for a prompt), the module of ``python -m``, the working directory."""
    main = sys.modules.get("__main__")
    argv = list(sys.argv)
    path = getattr(main, "__file__", None)
    if path is None:
        path = argv[0] if argv and argv[0] in ("-c", "-m") else "<interactive>"
    else:
        path = os.path.abspath(path)
    section = {"path": _scrub(path, secrets), "cwd": _scrub(_getcwd(), secrets)}
    spec = getattr(main, "__spec__", None)
    if spec is not None and getattr(spec, "name", None):
        section["module"] = spec.name
    blobs = {}
    source = _script_source(path, secrets)
    if source is not None:   # an untracked or edited script is in no commit: its text is the record
        section["sha256"], section["bytes"] = _put(blobs, source), len(source)
    return section, _mask_argv(argv, secrets), blobs


def _script_source(path: str, secrets: tuple) -> bytes | None:
    """The entry script's bytes (secret values masked), up to DIFF_LIMIT; read again
    only when its size or modification time changes."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not os.path.isfile(path) or st.st_size > DIFF_LIMIT:
        return None
    key = ("script", path, st.st_mtime_ns, st.st_size)
    if key not in _cache:
        try:
            with open(path, "rb") as f:
                _cache[key] = _scrub_bytes(f.read(DIFF_LIMIT + 1), secrets)
        except OSError:
            return None
    return _cache[key]


def _getcwd() -> str:
    try:
        return os.getcwd()
    except OSError:                                       # the working directory was removed
        return "<removed>"


def _python_part() -> dict:
    return {"version": platform.python_version(), "implementation": sys.implementation.name,
            "executable": _scrub(sys.executable, ()), "prefix": _scrub(sys.prefix, ())}


def _packages_blob(secrets: tuple) -> bytes:
    """Every installed distribution, one ``name==version`` a line (`` @ url`` after it
    for direct and editable installs), sorted by name; the first of a name on sys.path
    wins, as imports find it."""
    import importlib.metadata
    seen = {}
    for dist in importlib.metadata.distributions():
        name, version = _name_version(dist)
        key = re.sub(r"[-_.]+", "-", name).lower() if name else None
        if key is None or key in seen:
            continue
        line = f"{name}=={version}"
        url = _direct_url(dist)
        if url:
            line += " @ " + _scrub(url, secrets)
        seen[key] = line
    return "".join(seen[k] + "\n" for k in sorted(seen)).encode()


def _name_version(dist) -> tuple:
    """Name and Version from the metadata header, read by hand: ten times faster than
    the email parser behind ``dist.metadata``, which stays the fallback."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.splitlines():
        if not line:
            break
        if line.startswith("Name:"):
            name = line[5:].strip()
        elif line.startswith("Version:"):
            version = line[8:].strip()
        if name and version:
            return name, version
    try:
        return dist.metadata["Name"], dist.version
    except Exception:                                     # damaged metadata: leave it out
        return None, None


def _direct_url(dist) -> str | None:
    try:
        info = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("url"), str):
        return None
    url = info["url"]
    vcs = info.get("vcs_info") or {}
    if vcs.get("commit_id"):
        url += "@" + str(vcs["commit_id"])
    if (info.get("dir_info") or {}).get("editable"):
        url += " (editable)"
    return url


def _machine_blob() -> bytes:
    info = {"os": platform.system(), "release": platform.release(), "arch": platform.machine(),
            "hostname": socket.gethostname(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "memory_bytes": _memory_total()}
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        info["distro"] = platform.freedesktop_os_release().get("PRETTY_NAME")
    except (OSError, AttributeError):
        pass
    return _json_bytes(info)


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "cpu model")):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


_GPU_FIELDS = ("index", "name", "memory.total", "driver_version", "uuid", "pci.bus_id")


def _gpus_part() -> dict:
    """{"devices": [...], "driver", "cuda", "source"}: from nvidia-smi, else from torch
    where the program imported it and initialised CUDA already (asking torch otherwise
    would initialise CUDA in this process, which a later fork cannot undo)."""
    out = {"devices": []}
    torch = sys.modules.get("torch")
    if torch is not None and getattr(getattr(torch, "version", None), "cuda", None):
        out["cuda"] = torch.version.cuda
    devices = _nvidia_smi()
    if devices:
        out.update(source="nvidia-smi", driver=devices[0].pop("driver_version"))
        for d in devices[1:]:
            d.pop("driver_version")
        out["devices"] = devices
    elif torch is not None and _torch_cuda_initialized(torch):
        props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
        out.update(source="torch", devices=[{"index": i, "name": p.name, "memory_mib": p.total_memory >> 20}
                                            for i, p in enumerate(props)])
    return out


def _nvidia_smi() -> list:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=" + ",".join(_GPU_FIELDS), "--format=csv,noheader,nounits"],
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=GPU_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return _parse_nvidia_smi(done.stdout.decode("utf-8", "replace")) if done.returncode == 0 else []


def _parse_nvidia_smi(text: str) -> list:
    """Devices from ``nvidia-smi --query-gpu=<_GPU_FIELDS> --format=csv,noheader,nounits``;
    a field the driver cannot tell ("[N/A]") stays text."""
    devices = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(_GPU_FIELDS):
            continue
        index, name, memory, driver, uuid, bus = cells
        devices.append({"index": int(index) if index.isdigit() else index, "name": name,
                        "memory_mib": int(memory) if memory.isdigit() else memory, "driver_version": driver,
                        "uuid": uuid, "pci": bus})
    return devices


def _torch_cuda_initialized(torch) -> bool:
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:                                     # a torch without CUDA, or a broken one
        return False


def _env_part(names: list, secrets: tuple) -> tuple:
    """(job configuration, this process's ranks and ids): the allow-listed variables."""
    shared, own = {}, {}
    for name in sorted(names):
        value = os.environ.get(name)
        if value is not None:
            (own if name in ENV_PER_PROCESS else shared)[_scrub(name, ())] = _scrub(value, secrets)
    return shared, own


# -- assembly --------------------------------------------------------------------------

_lock = threading.RLock()
_cache: dict = {}                 # part -> (section, {sha: blob}) read once per process
WATCH_FILES = 500                 # tracked files whose edits a later capture sees
_git_cache: dict = {}             # where -> (fingerprint, paths, (section, blobs) or None)


def _after_fork() -> None:
    global _lock
    _lock = threading.RLock()     # a thread of the parent may have held it


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _parts_arg(what) -> tuple:
    if what is True or what is None:
        return CAPTURE_ALL
    if what is False:
        return ()
    if not isinstance(what, (list, tuple)):
        raise InvalidTypeError("capture", f"expected True, False, None or a list of names from {CAPTURE_ALL}, "
                                          f"got {what!r}")
    for part in what:
        if part not in CAPTURE_ALL:
            raise InvalidArgumentError("capture", f"unknown part {part!r}: expected names from {CAPTURE_ALL}")
    return tuple(p for p in CAPTURE_ALL if p in what)


def _capture(parts: tuple, cwd: str | None) -> Captured:
    if not parts:
        return Captured({}, {})
    secrets, env_names = _scan_environ()
    record, shared, blobs = {}, {}, {}
    if "git" in parts:
        got = None
        for where in (cwd,) if cwd is not None else (_code_dir(), _getcwd()):
            got = _git_part(os.path.abspath(where), secrets)
            if got is not None:
                break
        if got is not None:
            shared["git"], git_blobs = got
            blobs.update(git_blobs)
    if "script" in parts:
        shared["script"], record["argv"], script_blobs = _script_part(secrets)
        blobs.update(script_blobs)
    for part in ("python", "packages", "machine", "gpus"):
        if part in parts:
            section, part_blobs = _static_part(part, secrets)
            shared[part] = section
            blobs.update(part_blobs)
    if "env" in parts:
        shared["env"], own = _env_part(env_names, secrets)
        if own:
            record["env"] = own
    record["shared"] = _put(blobs, _json_bytes(shared))
    return Captured(record, blobs)


def _static_part(part: str, secrets: tuple) -> tuple:
    got = _cache.get(part)
    if got is None:
        if part == "python":
            got = _python_part(), {}
        elif part == "gpus":
            got = _gpus_part(), {}
        else:
            blobs = {}
            data = _packages_blob(secrets) if part == "packages" else _machine_blob()
            section = {"blob": _put(blobs, data)}
            if part == "packages":
                section["count"] = data.count(b"\n")
            got = section, blobs
        _cache[part] = got
    return got


def _code_dir() -> str:
    """Where the code is: the entry script's folder, unless the script is an installed
    tool (under sys.prefix: ``python -m pytest``, a console script), else the working
    directory."""
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    if path:
        folder = os.path.dirname(os.path.abspath(path))
        if not any(_inside(folder, p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}):
            return folder
    return _getcwd()


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _json_bytes(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _put(blobs: dict, data: bytes) -> str:
    key = hashlib.sha256(data).hexdigest()
    blobs[key] = data
    return key


# -- describe --------------------------------------------------------------------------

def _blob(get_blob, key: str) -> bytes:
    data = get_blob(key)
    if hashlib.sha256(data).hexdigest() != key:
        raise CorruptionError(f"blob {key}", 0, "content does not match its sha256")
    return data


def _json_blob(get_blob, key: str):
    data = _blob(get_blob, key)
    try:
        return json.loads(data)
    except ValueError as e:
        raise CorruptionError(f"blob {key}", 0, f"not JSON: {e}") from None


def _describe_git(section, record, get_blob) -> dict:
    out = dict(section)
    key = out.pop("diff_blob", None)
    out["diff"] = _blob(get_blob, key).decode("utf-8", "replace") if key else None
    return out


def _describe_packages(section, record, get_blob) -> dict:
    out = {}
    for line in _blob(get_blob, section["blob"]).decode("utf-8", "replace").splitlines():
        name, _, version = line.partition(" @ ")[0].partition("==")
        out[name] = version
    return out


_DESCRIBE = {
    "git": _describe_git,
    "script": lambda section, record, get_blob: dict(
        section, argv=record.get("argv"),
        **({"text": get_blob(section["sha256"]).decode("utf-8", "replace")} if "sha256" in section else {})),
    "python": lambda section, record, get_blob: section,
    "packages": _describe_packages,
    "machine": lambda section, record, get_blob: _json_blob(get_blob, section["blob"]),
    "gpus": lambda section, record, get_blob: section,
    "env": lambda section, record, get_blob: dict(sorted({**section, **record.get("env", {})}.items())),
}
