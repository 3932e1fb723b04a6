"""What the exporter cannot run is refused in one line that says why, exit 2: never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from export.errors import ExportError
from export.source import read_source


def _edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny model: the tests edit its config files."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "m"))


def _export_cli(model_dir: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "export", "--model", str(model_dir), "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # a `python -m export` subprocess: ~8-10 s (torch and transformers load)
def test_remote_code_model_is_refused_naming_architecture_and_supported_list(
    model: Path, tmp_path: Path
) -> None:
    _edit(
        model / "config.json",
        model_type="nomic_bert",
        auto_map={"AutoModel": "modeling_hf_nomic_bert.NomicBertModel"},
    )
    result = _export_cli(model, tmp_path / "out")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("export failed")]
    assert "'nomic_bert'" in line and "trust_remote_code" in line and "qwen3" in line and "mpnet" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a `python -m export` subprocess: ~8-10 s
def test_unknown_architecture_is_refused_with_the_supported_list(model: Path, tmp_path: Path) -> None:
    _edit(model / "config.json", model_type="funnel")
    result = _export_cli(model, tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unsupported architecture 'funnel'" in result.stderr and "modernbert" in result.stderr


def test_unknown_module_and_activation_are_refused(model: Path) -> None:
    modules = json.loads((model / "modules.json").read_text())
    modules.insert(
        2,
        {
            "idx": 9,
            "name": "9",
            "path": "9_Router",
            "type": "sentence_transformers.base.modules.router.Router",
        },
    )
    (model / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ExportError, match="Router"):
        read_source(model)
    modules[2] = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    (model / "modules.json").write_text(json.dumps(modules))
    (model / "2_Dense").mkdir()
    dense = {
        "in_features": 32,
        "out_features": 8,
        "bias": True,
        "activation_function": "torch.nn.modules.activation.Softsign",
    }
    (model / "2_Dense" / "config.json").write_text(json.dumps(dense))
    with pytest.raises(ExportError, match=r"Softsign.*supported: \['identity', 'relu', 'sigmoid', 'tanh'\]"):
        read_source(model)


def test_max_length_is_read_wherever_the_save_format_keeps_it(model: Path) -> None:
    # sentence-transformers 2-4: sentence_bert_config.json
    assert read_source(model).max_seq_length == 24
    # 5-6: the tokenizer's model_max_length (sentence_bert_config.json no longer has it)
    (model / "sentence_bert_config.json").write_text(json.dumps({"transformer_task": "feature-extraction"}))
    _edit(model / "tokenizer_config.json", model_max_length=40)
    assert read_source(model).max_seq_length == 40
    # Neither: the positions the model has (64 in the tiny BERT), never transformers' "no limit" sentinel.
    _edit(model / "tokenizer_config.json", model_max_length=1000000000000000019884624838656)
    assert read_source(model).max_seq_length == 64
