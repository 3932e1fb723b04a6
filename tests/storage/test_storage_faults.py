"""Storage faults end with one clear line and exit 2, never a raw traceback; a rerun then resumes.

Bad places are refused before any work (unknown scheme, missing bucket, refused credentials,
unreachable endpoint); faults met mid-run (corrupt data pages behind a valid footer, a full
disk) stop the job with the file named; a second run on an output that a live run holds is
refused before it does anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import storage
from jobs.embed_corpus.cli import main
from jobs.embed_corpus.config import JobConfig
from jobs.embed_corpus.run import prepare
from jobs.embed_corpus.run_state import LEASE_FILE, RUN_FILE, Lease
from testkit.s3_server import S3Server, s3_server

REPO = Path(__file__).resolve().parents[2]
# The conftest fixtures' settings: the S3 bucket (this module passes the endpoint in URIs, so it uses
# `s3_no_env`) and the Ray the job subprocesses attach to.
S3_BUCKET = "faults"
LOCAL_RAY = {"object_store_mb": 150}


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def one_clear_line(err: str) -> str:
    """The job's error: exactly one line, no traceback anywhere (Ray's own INFO log lines may precede it)."""
    lines = [line for line in err.splitlines() if line.startswith("embed_corpus: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def s3_uri(server: S3Server, key: str) -> str:
    # Endpoint in the URI's query (pyarrow's own option), so this module needs no environment.
    port = server.endpoint.rsplit(":", 1)[1]
    return f"s3://{key}?endpoint_override=127.0.0.1:{port}&scheme=http"


@pytest.fixture()
def aws_test_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.slow  # ~20 s: bounded retries against unreachable endpoints
def test_bad_places_are_refused_before_any_work_naming_the_uri(
    tiny_artifact: Path,
    tmp_path: Path,
    s3_no_env: S3Server,
    aws_test_keys: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    corpus = tmp_path / "q.parquet"
    pq.write_table(pa.table({"question": ["a", "b"]}), corpus)
    art = str(tiny_artifact)

    code, _, err = run_cli(
        capsys, "--artifact", art, "--input", "foo://x/q.parquet", "--output", str(tmp_path / "o")
    )
    assert code == 2 and "foo://x/q.parquet" in one_clear_line(err) and "unknown storage scheme 'foo'" in err

    missing = s3_uri(s3_no_env, "no-such-bucket/out")
    code, _, err = run_cli(capsys, "--artifact", art, "--input", str(corpus), "--output", missing)
    assert code == 2 and "bucket 'no-such-bucket' does not exist" in one_clear_line(err)
    assert "s3://no-such-bucket/out" in err

    code, _, err = run_cli(
        capsys,
        "--artifact",
        art,
        "--input",
        s3_uri(s3_no_env, "faults/none/*.parquet"),
        "--output",
        str(tmp_path / "o"),
    )
    assert code == 2 and "no input files found" in one_clear_line(err)

    # Nothing listens on this port: bounded retries with backoff, then one line.
    dead = "s3://faults/out?endpoint_override=127.0.0.1:9&scheme=http"
    started = time.monotonic()
    code, _, err = run_cli(capsys, "--artifact", art, "--input", str(corpus), "--output", dead)
    assert code == 2 and "unreachable" in one_clear_line(err) and "s3://faults/out" in err
    assert time.monotonic() - started < 120
    assert not (tmp_path / "o").exists()


def test_refused_credentials_are_named(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that checks signatures (moto with auth on) refuses unknown keys: one line saying so."""
    env_backup = dict(os.environ)
    os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"  # moto: authenticate every request
    try:
        with s3_server() as strict:
            os.environ.update({"AWS_ACCESS_KEY_ID": "AKIAWRONGKEY", "AWS_SECRET_ACCESS_KEY": "wrong"})
            corpus = tmp_path / "q.parquet"
            pq.write_table(pa.table({"question": ["a"]}), corpus)
            out = s3_uri(strict, "faults/out")
            code, _, err = run_cli(
                capsys, "--artifact", str(tiny_artifact), "--input", str(corpus), "--output", out
            )
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    assert code == 2
    line = one_clear_line(err)
    assert "s3://faults/out" in line and ("access denied" in line or "credentials" in line), line


def test_a_second_run_on_a_live_output_is_refused_before_it_writes(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "q.parquet"
    pq.write_table(pa.table({"question": ["how do I pay", "where is my order"]}), corpus)
    out = tmp_path / "out"
    first = Lease(storage.resolve(out))
    first.acquire()  # a first run is alive and heartbeating on this output
    try:
        code, _, err = run_cli(
            capsys, "--artifact", str(tiny_artifact), "--input", str(corpus), "--output", str(out)
        )
        assert code == 2
        assert f"run id {first.run_id}" in one_clear_line(err) and "being written by another run" in err
        assert not (out / RUN_FILE).exists()  # the refused run wrote nothing
    finally:
        first.release()
    assert not (out / LEASE_FILE).exists()
    # A lease left by a driver that died on another machine is taken over once it expired.
    storage.write_json(
        out / LEASE_FILE, {"run_id": "dead", "host": "elsewhere", "pid": 1, "heartbeat": 0, "ttl_seconds": 60}
    )
    cfg = JobConfig(str(tiny_artifact), str(corpus), str(out))
    taker = Lease(storage.resolve(out))
    prepare(cfg, lease=taker)
    assert storage.read_json(out / LEASE_FILE)["run_id"] == taker.run_id
    taker.release()


def run_job(address: str, *args: str) -> tuple[int, str, str]:
    """The job as users run it: its own process, its own stderr."""
    cmd = [sys.executable, "-m", "jobs.embed_corpus", *args, "--no-progress", "--ray-address", address]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout, done.stderr


def job_args(artifact: Path, corpus: Path, out: Path) -> tuple[str, ...]:
    """The job's arguments for a corpus, in shards of 100 rows."""
    return ("--artifact", str(artifact), "--input", str(corpus), "--output", str(out), "--shard-rows", "100")


def corrupt_second_row_group(path: Path) -> None:
    """Overwrite bytes inside row group 1's question data (past the page header); the footer stays valid."""
    column = pq.read_metadata(path).row_group(1).column(1)
    start = column.dictionary_page_offset or column.data_page_offset
    end = start + column.total_compressed_size
    with open(path, "r+b") as fh:
        fh.seek(start + 40)
        fh.write(os.urandom(min(64, end - start - 48)))


@pytest.mark.ray
@pytest.mark.slow
def test_corrupt_data_pages_stop_the_job_naming_the_file_and_a_rerun_resumes(
    local_ray: str, tiny_artifact: Path, input_dir: Path, tmp_path: Path
) -> None:
    data = input_dir / "a.parquet"
    questions = [f"how do I change setting number {i} in my account" for i in range(300)]
    table = pa.table({"id": pa.array(range(300), pa.int64()), "question": questions})
    pq.write_table(table, data, row_group_size=100, compression="snappy")
    pristine = tmp_path / "a.pristine.parquet"
    shutil.copy2(data, pristine)
    corrupt_second_row_group(data)
    os.utime(data, ns=(pristine.stat().st_atime_ns, pristine.stat().st_mtime_ns))
    out = tmp_path / "out"
    args = job_args(tiny_artifact, input_dir, out)

    code, _, err = run_job(local_ray, *args)
    assert code == 2
    line = one_clear_line(err)
    assert str(data) in line and "rows 100-200" in line, line

    shutil.copy2(pristine, data)  # restored from backup (`cp -p`): same file identity
    code, out_text, err = run_job(local_ray, *args)
    assert code == 0, err
    assert "resumed:" in out_text
    got = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))
    assert sorted(got.column("id").to_pylist()) == list(range(300))


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (grow it with `mount -o remount,size=...`), unmounted after the test."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root in a private mount namespace)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.mark.ray
@pytest.mark.slow
def test_full_disk_stops_the_job_with_one_line_and_a_rerun_resumes_once_space_is_back(
    local_ray: str, tiny_artifact: Path, tmp_path: Path, small_disk: Path
) -> None:
    out = small_disk
    corpus = tmp_path / "q.parquet"
    questions = [f"what is the status of order {i} and when does it ship" for i in range(800)]
    pq.write_table(pa.table({"id": pa.array(range(800), pa.int64()), "question": questions}), corpus)
    args = job_args(tiny_artifact, corpus, out)

    code, _, err = run_job(local_ray, *args)
    assert code == 2
    line = one_clear_line(err)
    assert "no space left on device" in line and str(out) in line, line
    assert not list(out.rglob("*.tmp")), "a failed write left a temp file behind"

    subprocess.run(["mount", "-o", "remount,size=8m", str(out)], check=True)
    code, _, err = run_job(local_ray, *args)
    assert code == 0, err
    got = pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("part-*.parquet")))
    assert sorted(got.column("id").to_pylist()) == list(range(800))
