"""`vmfml info`: what a bug report needs, as text and as JSON; the bug-report template asks for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from vmfml.info import collect_info, render

ROOT = Path(__file__).resolve().parents[1]


def test_info_as_json_names_versions_devices_faiss_milvus_threads_and_folders(
    run_cli: Callable[..., Any],
) -> None:
    result = run_cli("info", "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["libraries"]["torch"] and info["libraries"]["pytorch-metric-learning"]
    assert info["devices"][0]["device"] == "cpu"
    assert any(d["device"].startswith("cuda") for d in info["devices"])
    import faiss

    assert info["faiss"]["version"] == faiss.__version__
    assert isinstance(info["milvus"]["available"], bool)
    assert info["threads"]["torch threads"] == torch.get_num_threads()
    assert {"data (VMFML_DATA)", "fashion-mnist", "mnist-digits", "animal-mnist"} <= set(
        info["folders"]
    )


def test_info_as_text(
    run_cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VMFML_DATA", str(tmp_path / "nowhere"))
    result = run_cli("info")
    assert result.code == 0, result.err
    for heading in ("libraries:", "devices:", "faiss:", "milvus:", "threads:", "folders:"):
        assert heading in result.out
    assert f"data (VMFML_DATA): {tmp_path / 'nowhere'} (missing)" in result.out


def test_a_cuda_device_shows_its_capability_and_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    props = SimpleNamespace(name="NVIDIA H200", major=9, minor=0, total_memory=141 * 2**30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)

    class NoDevice:
        def __init__(self, i: int) -> None:
            pass

        def __enter__(self) -> None:
            pass

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(torch.cuda, "device", NoDevice)
    info = collect_info()
    cuda = info["devices"][1]
    assert cuda["device"] == "cuda:0" and cuda["capability"] == "9.0" and cuda["bf16"] is True
    assert "cuda:0: NVIDIA H200 (capability 9.0" in render(info)


def test_the_bug_report_template_asks_for_vmfml_info() -> None:
    template = (ROOT / ".github" / "ISSUE_TEMPLATE" / "bug_report.md").read_text()
    assert template.startswith("---\nname: ")
    assert "vmfml info" in template
