"""Environment capture (steplog.environment) against real git repositories, real
processes and importlib.metadata; expectations come from git itself and hashlib."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest

import steplog
from steplog import environment
from steplog.environment import CAPTURE_ALL, capture, describe, is_secret_name, strip_credentials

PLANTED = {  # distinctive values: any of them found in a record or blob is a leak
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMIK7MDENGbPxRfiCYzz11",
    "GITHUB_TOKEN": "ghp_plantedGithubToken00000000000",
    "WANDB_API_KEY": "wandbPlantedApiKey0123456789abcd",
    "MY_PASSWORD": "hunter2-planted-password",
    "TORCH_AUTH_TOKEN": "torchPlantedTokenByPrefix",        # allow-listed prefix, secret name
}


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    """No cache from another test; git without the user's or the system's config."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    environment.reset_cache()
    yield
    environment.reset_cache()


def git(repo, *args) -> bytes:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True).stdout


@pytest.fixture
def repo(tmp_path):
    """A real repository: two commits of train.py, then an uncommitted edit and an
    untracked file."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Tester")
    git(path, "config", "user.email", "tester@example.com")
    (path / "train.py").write_text("lr = 0.1\nepochs = 3\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "first")
    (path / "train.py").write_text("lr = 0.2\nepochs = 3\n")
    (path / "notes.txt").write_text("untracked\n")
    return path


def everything(captured) -> bytes:
    return json.dumps(captured.record).encode() + b"".join(captured.blobs.values())


def describe_of(captured) -> dict:
    return describe(captured.record, captured.blobs.__getitem__)


def test_git_commit_branch_dirty_and_diff(repo):
    captured = capture(["git"], cwd=repo)
    got = describe_of(captured)["git"]
    assert got["commit"] == git(repo, "rev-parse", "HEAD").decode().strip()
    assert got["branch"] == "main"
    assert got["dirty"] is True
    diff = git(repo, "diff", "HEAD")
    assert b"+lr = 0.2" in diff
    assert got["diff"] == diff.decode()
    assert got["diff_sha256"] == hashlib.sha256(diff).hexdigest() == hashlib.sha256(got["diff"].encode()).hexdigest()
    assert got["diff_bytes"] == len(diff)
    assert got["diff_sha256"] in captured.blobs                 # the diff text is a blob of its own
    assert got["untracked"] == 1 and got["untracked_names"] == ["notes.txt"]


def test_git_state_is_read_again_after_a_commit(repo):
    first = describe_of(capture(["git"], cwd=repo))["git"]
    git(repo, "commit", "-q", "-am", "second")
    second = describe_of(capture(["git"], cwd=repo))["git"]
    assert second["commit"] == git(repo, "rev-parse", "HEAD").decode().strip() != first["commit"]
    assert second["dirty"] is False and second["diff"] is None
    assert second["untracked"] == 1                             # untracked files alone: not dirty


def test_an_edit_between_two_captures_is_seen(repo):
    """A notebook edits its code between two runs without staging it: the second
    capture carries the new diff, and an edit back to the commit reads clean."""
    first = describe_of(capture(["git"], cwd=repo))["git"]
    (repo / "train.py").write_text("lr = 0.3\nepochs = 30\n")
    second = describe_of(capture(["git"], cwd=repo))["git"]
    assert second["dirty"] is True and "+lr = 0.3" in second["diff"] and second["diff_sha256"] != first["diff_sha256"]
    assert second["diff"] == git(repo, "diff", "HEAD").decode()
    (repo / "train.py").write_text("lr = 0.1\nepochs = 3\n")
    assert describe_of(capture(["git"], cwd=repo))["git"]["dirty"] is False


def test_git_diff_over_the_limit_keeps_hash_and_size(repo, monkeypatch):
    monkeypatch.setattr(environment, "DIFF_LIMIT", 10)
    captured = capture(["git"], cwd=repo)
    got = describe_of(captured)["git"]
    diff = git(repo, "diff", "HEAD")
    assert got["diff"] is None
    assert got["diff_sha256"] == hashlib.sha256(diff).hexdigest() and got["diff_bytes"] == len(diff)
    assert diff not in everything(captured)


def test_git_remote_credentials_are_stripped(repo):
    git(repo, "remote", "add", "origin", "https://alice:ghp_remoteToken123456@github.com/team/model.git")
    captured = capture(["git"], cwd=repo)
    assert describe_of(captured)["git"]["remote"] == "https://github.com/team/model.git"
    assert b"ghp_remoteToken123456" not in everything(captured) and b"alice" not in everything(captured)


def test_no_repository_and_no_commit(tmp_path):
    assert "git" not in describe_of(capture(["git", "python"], cwd=tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    got = describe_of(capture(["git"], cwd=empty))["git"]
    assert got["commit"] is None and got["dirty"] is False


def test_no_git_on_path(repo):
    code = ("import json, sys; from steplog.environment import capture, describe; c = capture(cwd=sys.argv[1]); "
            "print(json.dumps(sorted(describe(c.record, c.blobs.__getitem__))))")
    done = subprocess.run([sys.executable, "-c", code, str(repo)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PATH=""))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == sorted(set(CAPTURE_ALL) - {"git"})


def test_planted_secrets_never_reach_record_or_blobs(repo, monkeypatch):
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    monkeypatch.setenv("NCCL_FAKE_URL", "https://bob:s3cr3tpass@mirror.example.com/x")
    monkeypatch.setenv("UNLISTED_VARIABLE", "keep-me-out")
    (repo / "train.py").write_text(f"key = {PLANTED['WANDB_API_KEY']!r}\n")     # a secret in the diff
    git(repo, "remote", "add", "origin", f"https://x:{PLANTED['GITHUB_TOKEN']}@github.com/t/m.git")
    monkeypatch.setattr(sys, "argv", ["train.py", "--api-key", PLANTED["WANDB_API_KEY"],
                                      f"--token={PLANTED['GITHUB_TOKEN']}", "--lr", "0.1", PLANTED["MY_PASSWORD"],
                                      "db.password=hunter3-hydra"])
    captured = capture(cwd=repo)
    data = everything(captured)
    for value in [*PLANTED.values(), "s3cr3tpass", "hunter3-hydra"]:
        assert value.encode() not in data, value
    assert captured.record["env"] == {"RANK": "3"}                   # a rank: in the record, not the shared blob
    got = describe_of(captured)
    assert got["env"]["RANK"] == "3" and got["env"]["NCCL_DEBUG"] == "INFO"
    assert got["env"]["NCCL_FAKE_URL"] == "https://mirror.example.com/x"
    assert "UNLISTED_VARIABLE" not in got["env"] and "TORCH_AUTH_TOKEN" not in got["env"]
    assert got["script"]["argv"] == ["train.py", "--api-key", "***", "--token=***", "--lr", "0.1", "***",
                                     "db.password=***"]
    assert got["git"]["diff_masked"] is True and "key = '***'" in got["git"]["diff"]


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "WANDB_API_KEY", "MY_PASSWORD", "HF_TOKEN",
                                  "api-key", "--api-key", "apiKey", "DB_PASSWD", "X-Amz-Signature", "X-Amz-Credential",
                                  "sig", "AZURE_STORAGE_CONNECTION_STRING", "NPM_AUTH", "SSH_PRIVATE_KEY",
                                  "refreshToken", "MYAPIKEY", "SESSION_COOKIE", "pass"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["RANK", "WORLD_SIZE", "CUDA_VISIBLE_DEVICES", "NCCL_DEBUG", "PYTHONHASHSEED",
                                  "MASTER_PORT", "lr", "--batch-size", "--max-tokens", "--tokenizer", "KEYBOARD",
                                  "MONKEY", "SLURM_JOB_ID", "TORCH_HOME", "OMP_NUM_THREADS", "PWD"])
def test_not_secret_names(name):
    assert not is_secret_name(name)


@pytest.mark.parametrize("url, stripped", [
    ("https://user:token@host/x", "https://host/x"),
    ("https://ghp_abc@github.com/o/r.git", "https://github.com/o/r.git"),
    ("https://u:p@ss@host:8080/x?y=1", "https://host:8080/x?y=1"),
    ("ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git"),
    ("ssh://git:pw@github.com/o/r.git", "ssh://github.com/o/r.git"),
    ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ("s3://bucket/k?X-Amz-Signature=abc&X-Amz-Date=1", "s3://bucket/k?X-Amz-Signature=***&X-Amz-Date=1"),
    ("postgres://admin:pw@db:5432/runs", "postgres://db:5432/runs"),
    ("a=b, see https://u:p@h/x and http://h2/y", "a=b, see https://h/x and http://h2/y"),
    ("lr=0.1", "lr=0.1"),
])
def test_strip_credentials(url, stripped):
    assert strip_credentials(url) == stripped


def test_packages_blob_lists_installed_versions():
    captured = capture(["packages"])
    shared = json.loads(captured.blobs[captured.record["shared"]])
    blob = captured.blobs[shared["packages"]["blob"]]
    assert hashlib.sha256(blob).hexdigest() == shared["packages"]["blob"]
    lines = blob.decode().splitlines()
    for name in ("numpy", "pyarrow", "lmdb"):
        assert f"{name}=={importlib.metadata.version(name)}" in [line.partition(" @ ")[0] for line in lines]
    got = describe_of(captured)["packages"]
    assert got["numpy"] == importlib.metadata.version("numpy")
    assert shared["packages"]["count"] == len(lines) == len(got)


def test_direct_url_credentials_are_stripped(tmp_path, monkeypatch):
    info = tmp_path / "site" / "plantedpkg-1.2.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plantedpkg\nVersion: 1.2.3\n\nA package.\n")
    (info / "direct_url.json").write_text(json.dumps({"url": "https://oauth2:glpat-planted0001@gitlab.com/t/p.git",
                                                      "vcs_info": {"vcs": "git", "commit_id": "abc123"}}))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    captured = capture(["packages"])
    assert b"plantedpkg==1.2.3 @ https://gitlab.com/t/p.git@abc123\n" in everything(captured)
    assert b"glpat-planted0001" not in everything(captured)


def test_parts_selection_and_bad_names():
    assert capture(False) == environment.Captured({}, {})
    only = capture(["python"])
    assert set(only.record) == {"shared"}
    got = describe_of(only)
    assert list(got) == ["python"]
    assert got["python"]["version"] == "%d.%d.%d" % sys.version_info[:3]
    assert got["python"]["executable"] == sys.executable
    assert set(describe_of(capture(True))) >= set(CAPTURE_ALL) - {"git"}
    assert capture(None).record.keys() == capture(True).record.keys()
    for bad, error_type in ((["python", "pip"], steplog.InvalidArgumentError), ("python", steplog.InvalidTypeError),
                            (3, steplog.InvalidTypeError)):
        with pytest.raises(error_type) as error:
            capture(bad)
        assert error.value.argument == "capture"
    with pytest.raises(TypeError):
        capture(["python"], cwd=3)


def test_machine_and_script():
    got = describe_of(capture(["machine", "script"]))
    assert got["machine"]["hostname"] == platform.node()
    assert got["machine"]["cpu_count"] == os.cpu_count()
    assert got["machine"]["memory_bytes"] > 0
    assert got["script"]["cwd"] == os.getcwd()
    assert got["script"]["argv"][1:] == sys.argv[1:]


def test_runs_of_one_environment_share_their_blobs(repo):
    first, second = capture(cwd=repo), capture(cwd=repo)
    assert first.record == second.record and first.blobs.keys() == second.blobs.keys()
    for key, data in first.blobs.items():
        assert hashlib.sha256(data).hexdigest() == key


def test_describe_rejects_a_damaged_blob():
    captured = capture(["python"])
    with pytest.raises(steplog.CorruptionError):
        describe(captured.record, lambda key: captured.blobs[key] + b" ")
    with pytest.raises(TypeError):
        describe("not a record", captured.blobs.__getitem__)


def test_import_steplog_does_not_import_environment():
    done = subprocess.run([sys.executable, "-c", "import sys, steplog; print('steplog.environment' in sys.modules)"],
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


def test_nvidia_smi_lines():
    text = ("0, NVIDIA H200, 143771, 550.54.15, GPU-4f2c0a1e-0000-1111-2222-333344445555, 00000000:19:00.0\n"
            "1, NVIDIA H200, [N/A], 550.54.15, GPU-4f2c0a1e-0000-1111-2222-333344446666, 00000000:3B:00.0\n")
    assert environment._parse_nvidia_smi(text) == [
        {"index": 0, "name": "NVIDIA H200", "memory_mib": 143771, "driver_version": "550.54.15",
         "uuid": "GPU-4f2c0a1e-0000-1111-2222-333344445555", "pci": "00000000:19:00.0"},
        {"index": 1, "name": "NVIDIA H200", "memory_mib": "[N/A]", "driver_version": "550.54.15",
         "uuid": "GPU-4f2c0a1e-0000-1111-2222-333344446666", "pci": "00000000:3B:00.0"}]


def test_capture_imports_no_optional_library():
    code = ("import sys; from steplog.environment import capture; capture(); "
            "print([m for m in ('torch', 'pandas', 'matplotlib', 'polars') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_ranks_of_one_job_share_the_blob(repo, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    records = []
    for rank in ("0", "1"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        records.append(capture(cwd=repo).record)
    assert records[0]["shared"] == records[1]["shared"]
    assert [r["env"] for r in records] == [{"LOCAL_RANK": "0", "RANK": "0"}, {"LOCAL_RANK": "1", "RANK": "1"}]


def test_undecodable_arguments_and_names(repo, monkeypatch):
    (repo / os.fsdecode(b"data-\xff.bin")).write_bytes(b"x")
    monkeypatch.setattr(sys, "argv", ["train.py", os.fsdecode(b"--name=caf\xe9")])
    captured = capture(["git", "script"], cwd=repo)
    json.dumps(captured.record).encode()                          # encodable: no lone surrogates left
    got = describe_of(captured)
    assert got["script"]["argv"] == ["train.py", "--name=caf\ufffd"]
    assert sorted(got["git"]["untracked_names"]) == ["data-\ufffd.bin", "notes.txt"]


def test_git_found_from_the_working_directory(repo, monkeypatch):
    monkeypatch.chdir(repo)                                       # pytest's own __main__ lies in no repository
    assert describe_of(capture(["git"]))["git"]["commit"] == git(repo, "rev-parse", "HEAD").decode().strip()


def test_start_run_records_the_environment_once_per_content(tmp_path):
    """start_run captures by default: Store.environment gives back what capture() sees,
    the shared parts are stored once for many runs, capture=False records nothing, and
    a run's record stays small."""
    path = tmp_path / "s"
    with steplog.open(path) as store:
        runs = [store.start_run(name=f"r{i}") for i in range(20)]
        bare = store.start_run(capture=False)
        only = store.start_run(capture=["python"])
        env = store.environment(runs[-1].id)
        want = environment.describe(environment.capture().record, store.get_blob)
        assert env["python"] == want["python"] and env["packages"] == want["packages"]
        assert store.environment(bare.id) == {}
        assert set(store.environment(only.id)) == {"python"}
        with pytest.raises(steplog.InvalidArgumentError):
            store.start_run(capture=["nope"])
    blobs = [name for _, _, names in os.walk(path / "blobs") for name in names]
    assert len(blobs) == len(environment.capture().blobs) + 1   # + capture=["python"]'s own shared part


def test_the_entry_script_text_is_kept(tmp_path):
    """A script in no repository (or untracked) is in no commit: its text is recorded,
    once per content, and read back by Store.environment; a secret value in it that the
    process holds in a secret-named variable is masked."""
    script = tmp_path / "evaluate.py"
    script.write_text(textwrap.dedent(f"""
        import os, steplog
        key = "{'k' * 12}"   # the value of a secret-named variable of this process
        with steplog.open({str(tmp_path / 's')!r}) as store:
            run = store.start_run(capture=["script"])
            print(run.id)
        """))
    env = dict(os.environ, MY_SERVICE_TOKEN="k" * 12)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=True)
    with steplog.open(tmp_path / "s", mode="r") as store:
        got = store.environment(done.stdout.strip())["script"]
    assert got["path"] == str(script)
    assert got["text"] == script.read_text().replace("k" * 12, "***")
    assert got["sha256"] == hashlib.sha256(got["text"].encode()).hexdigest()
