"""`make gpu-check` without a GPU: it skips in one line and exits 0; and its GPU branch, part by
part, from sample nvidia-smi output, a fake nvidia-smi on PATH and stubbed steps."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from scripts import gpu_check
from scripts.gpu_goals import cpu_serve_reference, evaluate_goals
from scripts.gpu_smi import UtilizationSampler, parse_utilization, summarize_utilization
from testkit.cuda_gpu import cuda_unusable_reason, parse_gpu_query, query_gpus

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.py"
H100 = "NVIDIA H100 80GB HBM3, 580.82.07\n"


def fake_nvidia_smi(tmp_path: Path, body: str) -> dict[str, str]:
    """An environment whose PATH starts with a fake `nvidia-smi` running this shell body."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


no_gpu_here = pytest.mark.skipif(cuda_unusable_reason() is None, reason="a usable CUDA GPU is here")


@no_gpu_here
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and "no usable CUDA GPU" in lines[0], done.stdout
    assert not (out / "gpu-check.json").exists()


@no_gpu_here
def test_a_gpu_without_the_cuda_provider_is_not_usable(tmp_path: Path) -> None:
    """nvidia-smi answers, but this onnxruntime is the CPU build: skip, naming the reason."""
    env = fake_nvidia_smi(tmp_path, f"printf '{H100}'")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0
    assert len(done.stdout.strip().splitlines()) == 1
    assert "no CUDA provider" in done.stdout or "do not resolve" in done.stdout, done.stdout


def test_gpu_query_parsing() -> None:
    gpus = parse_gpu_query(H100 + "NVIDIA A10G, 570.86.15\n\n")
    assert [(g.name, g.driver) for g in gpus] == [
        ("NVIDIA H100 80GB HBM3", "580.82.07"),
        ("NVIDIA A10G", "570.86.15"),
    ]
    with pytest.raises(ValueError):
        parse_gpu_query("No devices were found\n")


def test_query_gpus_reports_why_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = fake_nvidia_smi(
        tmp_path,
        "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9",
    )
    monkeypatch.setenv("PATH", env["PATH"])
    gpus, reason = query_gpus()
    assert gpus == [] and reason is not None
    assert "exit 9" in reason and "could not communicate" in reason
    env = fake_nvidia_smi(tmp_path, f"printf '{H100}'")
    monkeypatch.setenv("PATH", env["PATH"])
    gpus, reason = query_gpus()
    assert reason is None and gpus[0].driver == "580.82.07"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "no nvidia-smi" in (query_gpus()[1] or "")


def test_utilization_parsing_and_encode_window() -> None:
    text = "0\n0\n3\n87\n[N/A]\n95\n91\n40\n2\n0\n9"  # start-up, encode phase, tear-down, cut-off line
    samples = parse_utilization(text)
    assert samples == [0, 0, 3, 87, 95, 91, 40, 2, 0, 9]
    summary = summarize_utilization(samples)
    # The window runs from the first to the last sample >= 10%: 87, 95, 91, 40.
    assert summary["active_samples"] == 4
    assert summary["mean_active"] == pytest.approx((87 + 95 + 91 + 40) / 4, abs=0.05)
    assert summary["share_active_at_least_80"] == 0.75
    assert summary["mean_all"] < summary["mean_active"]
    assert summarize_utilization([])["samples"] == 0
    assert "mean_active" not in summarize_utilization([0, 0, 5])


def test_sampler_collects_nvidia_smi_lines_while_a_block_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = fake_nvidia_smi(tmp_path, "for v in 0 55 99; do echo $v; done; sleep 30")
    monkeypatch.setenv("PATH", env["PATH"])
    with UtilizationSampler() as sampler:
        time.sleep(0.5)
    assert sampler.samples == [0, 55, 99]
    assert sampler.command[-4:] == ["-i", "0", "-lms", "200"]


def test_pytest_summary_parsing() -> None:
    assert gpu_check.parse_pytest_summary("....\n5 passed, 1 skipped in 3.2s\n") == {
        "passed": 5,
        "skipped": 1,
    }
    assert gpu_check.parse_pytest_summary("F.\n1 failed, 1 passed, 3 deselected in 1s") == {
        "failed": 1, "passed": 1, "deselected": 3}  # fmt: skip
    assert gpu_check.parse_pytest_summary("") == {}


def test_bulk_job_command_runs_on_the_gpu(tmp_path: Path) -> None:
    cmd, precision = gpu_check.job_command(Path("a"), Path("c"), Path("o"), gpus=1)
    assert cmd[1:3] == ["-m", "jobs.embed_corpus"]
    assert cmd[cmd.index("--device") + 1] == "gpu"
    assert cmd[cmd.index("--text-column") + 1] == "text"
    assert precision == "fp16"  # the job offers runtime precisions: the goal is measured in fp16
    if precision == "fp16":
        assert cmd[cmd.index("--precision") + 1] == "fp16"
    # The flags are the job's own: its parser accepts them.
    from jobs.embed_corpus.cli import parse_args

    assert parse_args(cmd[3:]).device == "gpu"


def test_generated_corpus_has_faq_length_texts(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = gpu_check.write_corpus(tmp_path / "corpus", rows=400, files=4)
    table = pq.read_table(out)
    assert table.num_rows == 400 and len(set(table["id"].to_pylist())) == 400
    texts = table["text"].to_pylist()
    assert all(t.startswith(q) for t, q in zip(texts, table["question"].to_pylist(), strict=True))
    assert sum(len(t.split()) for t in texts) / len(texts) > 25  # question + answer, not a bare question


def steps(
    rate: float | None, util: float | None, precision: str, serve_rps: float | None, fp16_min: float | None
) -> dict[str, Any]:
    return {
        "bulk_job": {"status": "ok", "result": {"rows_per_second": rate, "precision": precision,
                                                "gpu_utilization": {} if util is None else {"mean_active": util}}},
        "serve": {"status": "ok", "result": {} if serve_rps is None else {"embeddings": {"req_per_s": serve_rps}}},
        "probe_cosine": {"status": "ok", "result": {} if fp16_min is None else
                         {"fp16_vs_reference": {"min": fp16_min, "reference": "stand-in: stored probe vectors"}}},
    }  # fmt: skip


def test_goal_evaluation() -> None:
    cpu = {"texts_per_s": 30.0, "app": "inline", "source": "bench/results/serve.json", "note": "earlier run"}
    goals = {g["goal"]: g for g in evaluate_goals(steps(31_000, 86.0, "fp16", 200.0, 0.99995), cpu)}
    assert [g["status"] for g in goals.values()] == ["met", "met", "met", "met"]
    serve = next(g for g in goals.values() if g["goal"].startswith("Serve"))
    assert serve["measured"] == pytest.approx(6.67, abs=0.01) and "bench/results/serve.json" in serve["note"]
    assert "stand-in" in next(g for g in goals.values() if "cosine" in g["goal"])["note"]

    missed = [g["status"] for g in evaluate_goals(steps(31_000, 60.0, "fp32", 100.0, 0.9990), cpu)]
    assert missed == ["not met", "not met", "not met", "not met"]  # fp32 cannot meet the fp16 goal
    unmeasured = [g["status"] for g in evaluate_goals(steps(None, None, "fp16", None, None), None)]
    assert unmeasured == ["not measured"] * 4


def test_cpu_serve_reference_is_read_from_the_bench_result(tmp_path: Path) -> None:
    path = tmp_path / "serve.json"
    rounds = [{"app": {"embeddings": [{"concurrency": 16, "req_per_s": r}, {"concurrency": 32, "req_per_s": 99.0}]}}
              for r in (28.0, 30.0, 35.0)]  # fmt: skip
    path.write_text(
        json.dumps({"machine": {"cpu_model": "X", "cpu_count": 2}, "apps": {"inline": {"rounds": rounds}}})
    )
    ref = cpu_serve_reference(path)
    assert ref is not None and ref["texts_per_s"] == 30.0 and ref["rounds"] == 3 and ref["cpu_count"] == 2
    assert cpu_serve_reference(tmp_path / "missing.json") is None
    assert cpu_serve_reference(path, clients=4) is None
    if (REPO / "bench" / "results" / "serve.json").exists():  # the project's own figure parses
        assert (cpu_serve_reference(REPO / "bench" / "results" / "serve.json") or {}).get(
            "texts_per_s", 0
        ) > 0


def test_gpu_branch_writes_one_json_with_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the GPU steps stubbed: the JSON has the environment, each step's status, the goals,
    and a failed step makes the exit code 1 while the later steps still run."""
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "manifest.json").write_text("{}")
    monkeypatch.setattr(gpu_check, "cuda_unusable_reason", lambda: None)
    monkeypatch.setattr(gpu_check, "query_gpus", lambda: (parse_gpu_query(H100), None))
    monkeypatch.setattr(gpu_check, "environment", lambda gpus: {
        "gpu": {"name": gpus[0].name, "driver": gpus[0].driver, "cuda_driver_supports": "13.0",
                "cuda_onnxruntime_build": "13.0"},
        "onnxruntime": {"version": "1.31.1", "package": "onnxruntime-gpu"},
        "machine": {"cpu_flags": ["avx2"]}})  # fmt: skip

    def failing(*_: Any) -> dict[str, Any]:
        raise RuntimeError("PlacementError: 3 MatMul nodes on CPUExecutionProvider")

    monkeypatch.setattr(gpu_check, "step_placement", failing)
    monkeypatch.setattr(
        gpu_check, "step_probe_cosine", lambda a: {"fp16_vs_reference": {"min": 0.99993, "reference": "x"}}
    )
    monkeypatch.setattr(gpu_check, "step_bulk_job", lambda *a: {"rows_per_second": 27_000.0, "precision": "fp16",
                        "gpu_utilization": {"mean_active": 84.0}, "output": str(tmp_path / "emb")})  # fmt: skip
    monkeypatch.setattr(gpu_check, "step_serve", lambda *a: {"embeddings": {"req_per_s": 400.0}})
    monkeypatch.setattr(gpu_check, "step_gpu_tests", lambda *a: {"exit_code": 0, "counts": {"passed": 5}})
    code = gpu_check.main([str(tmp_path / "out"), "--artifact", str(artifact)])
    assert code == 1
    report = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert report["gpu"]["name"] == "NVIDIA H100 80GB HBM3" and report["gpu"]["driver"] == "580.82.07"
    assert report["onnxruntime"]["version"] == "1.31.1" and report["machine"]["cpu_flags"] == ["avx2"]
    assert list(report["steps"]) == list(gpu_check.STEPS)
    assert report["steps"]["placement"]["status"] == "failed"
    assert "MatMul" in report["steps"]["placement"]["error"]
    assert all(report["steps"][s]["status"] == "ok" for s in gpu_check.STEPS[1:])
    assert {g["status"] for g in report["goals"]} <= {"met", "not met", "not measured"}
    assert report["ok"] is False and report["within_budget"] is True
