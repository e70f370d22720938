"""Helpers several test modules share: the CLI run in-process, and tiny recipes and studies."""

from __future__ import annotations

import io
import re
import sys
import tarfile

from ntk_advisor import cli
from ntk_advisor.recipe.io import parse_recipe
from ntk_advisor.recipe.schema import SCHEMA_VERSION
from ntk_advisor.study.config import ValidateConfig


def run_cli(args, capsys, monkeypatch):
    """Run `ntk-advisor ARGS` in-process through main(); returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["ntk-advisor", *args])
    monkeypatch.setitem(cli._state, "verbose", False)
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def assert_one_line_error(code, err, pattern):
    assert code == 1, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    # In logs (no terminal) progress lines like "load model: 0/1" may come first; the error is
    # exactly one line, the last one.
    progress = [line for line in lines[:-1] if re.fullmatch(r"[\w ]+: \d+/\d+", line)]
    assert len(progress) == len(lines) - 1 and lines[-1].startswith("error: "), err
    assert re.search(pattern, lines[-1]), lines[-1]


def tiny_recipe(model_folder, csv, method="rocoft", **training):
    target = ({"module": "bert.encoder.layer.1.output.dense", "axis": "rows", "indices": [0, 3, 7]}
              if method == "rocoft" else {"module": "bert.encoder.layer.1.output.dense", "rank": 2})
    query = ({"module": "bert.encoder.layer.0.attention.self.query", "axis": "cols", "indices": [1, 2]}
             if method == "rocoft" else {"module": "bert.encoder.layer.0.attention.self.query", "rank": 4})
    settings = {"learning_rate": 5e-2, "epochs": 2, "batch_size": 16, "checkpoint_every": 5, "seed": 0,
                "early_stopping_patience": 0} | training
    return parse_recipe({"schema_version": SCHEMA_VERSION, "model": {"name": str(model_folder), "num_labels": 2},
                         "data": {"source": str(csv), "max_length": 12}, "method": method,
                         "targets": [target, query], "training": settings})


def tiny_config(model, data, **overrides):
    settings = dict(model=str(model), data=str(data), budget=400, placements=4, seeds=1, key_seeds=2,
                    key_placements=("advised", "first-k"), steps=3, batch_size=16, samples=12, max_length=16,
                    kernel_examples=24, resamples=200, head="random")
    return ValidateConfig(**(settings | overrides))


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A .tar.gz in memory with the given member names and bytes (fake sdists for the fetchers)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def install_fake_vader(tmp_path, monkeypatch, ground_truth: str):
    """A structurally faithful vaderSentiment sdist holding ``ground_truth``, which the fetcher is
    told to expect (its sha256 and row count); the cache goes to tmp_path."""
    import dataclasses
    import hashlib

    from ntk_advisor.inputs import builtins

    inner = tar_gz({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": ground_truth.encode()})
    archive = tar_gz({"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": inner})
    path = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    path.write_bytes(archive)
    monkeypatch.setattr(builtins, "_VADER", dataclasses.replace(builtins._VADER,
                                                                sha256=hashlib.sha256(archive).hexdigest()))
    monkeypatch.setattr(builtins, "_VADER_ROWS", len(ground_truth.strip().split("\n")))
    monkeypatch.setenv("NTK_ADVISOR_VADER_ARCHIVE", str(path))
    monkeypatch.setenv("NTK_ADVISOR_CACHE", str(tmp_path / "cache"))
    return path


def torchrun(args, port: int, processes: int = 2):
    """``torchrun --nproc-per-node P ARGS`` with one thread per process (2 cores here); the
    completed process, its output captured."""
    import os
    import subprocess

    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                           "--master-port", str(port), *map(str, args)], capture_output=True, text=True, timeout=600,
                          check=False, env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
