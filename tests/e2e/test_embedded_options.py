"""``podgate serve`` (no config) refuses what cannot work before it starts anything, and
names its model after ``--model-path``."""

from __future__ import annotations

import argparse
import socket

from proxy import embedded
from workers import defaults


def args(**kw) -> argparse.Namespace:
    base = {"host": "127.0.0.1", "port": 0, "model_path": None, "workers": 1}
    return argparse.Namespace(**{**base, **kw})


def test_model_id_is_the_default_or_the_gguf_stem():
    assert embedded.Embedded(embedded.Options.from_args(args())).model_id == "smollm2-135m-instruct"
    o = embedded.Options.from_args(args(model_path="/models/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"))
    assert embedded.Embedded(o).model_id == "qwen2.5-0.5b-instruct-q4_k_m"


def test_missing_model_file_is_refused(tmp_path, capsys):
    assert embedded.run(args(model_path=str(tmp_path / "nope.gguf"))) == 2
    assert "no such file" in capsys.readouterr().err


def test_taken_port_is_refused(capsys):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
        assert embedded.run(args(port=port)) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_threads_leave_a_core_for_the_rest(monkeypatch):
    monkeypatch.setattr(defaults.os, "cpu_count", lambda: 8)
    assert defaults.default_threads(1) == 7 and defaults.default_threads(2) == 3
    monkeypatch.setattr(defaults.os, "cpu_count", lambda: 2)
    assert defaults.default_threads(1) == 1 and defaults.default_threads(4) == 1
