"""README.md's and docs/tutorial.md's code blocks run, in order, as a user would run them.

A fresh copy of the repository (its tracked and unignored files, as a clone has them) is made in a
temporary folder; there, every bash and python block of README.md and then of docs/tutorial.md
runs in one bash session (so a variable or a background job of one block is there for the next):
README's first block sets the copy up (`bash scripts/setup.sh`, a second or so with the shared
environment ready, plus the copy's own .venv) and trains the main job (about 2 minutes on 2
cores); the tutorial trains on a folder of 2,000 images and serves it in the background. A block
that cannot run here is marked in its document by `<!-- not run: REASON -->` on the line before
it, and listed in NOT_RUN below, so that no block is left out unnoticed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/tutorial.md")
MARK = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)

# (document, how the block's first line starts, why) of every block marked as not run here.
NOT_RUN = [
    ("README.md", "bash scripts/setup.sh && bash scripts/test.sh", "the whole test suite"),
    ("README.md", ".venv/bin/vmfml train --directions global", "own folders, CUB-200, minutes"),
    ("README.md", "# one machine, 4 GPUs", "GPUs and several machines"),
    ("README.md", ".venv/bin/vmfml embed  --checkpoint", "paths of your own; serve"),
    ("README.md", ".venv/bin/vmfml classify path/to/photos", "paths of your own"),
    ("README.md", ".venv/bin/vmfml index add", "paths of your own"),
    ("README.md", ".venv/bin/vmfml bench --profile quick", "benchmark profiles"),
    ("docs/tutorial.md", ".venv/bin/vmfml train --data photos/fashion-2k --split", "a 2nd run"),
    ("docs/tutorial.md", ".venv/bin/vmfml serve --index runs/photos/index --port 8000\n", "serve"),
]


def blocks(document: str) -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, not-run reason or None) of each fenced block of `document`."""
    text = (ROOT / document).read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        mark = MARK.fullmatch(before.strip())
        line = text.count("\n", 0, match.start()) + 1
        found.append((line, match.group(1), match.group(2), mark.group(1) if mark else None))
    return found


def test_the_blocks_not_run_are_marked_and_listed() -> None:
    marked = []
    for document in DOCUMENTS:
        for _, language, code, reason in blocks(document):
            if reason is not None:
                assert language in ("bash", "python"), (document, code)
                assert reason.strip(), (document, code)
                marked.append((document, code))
    listed = [
        next((d, start) for d, start, _ in NOT_RUN if d == document and code.startswith(start))
        for document, code in marked
    ]
    assert sorted(listed) == sorted((d, start) for d, start, _ in NOT_RUN)
    # Every other block of code runs.
    runnable = [
        (document, code)
        for document in DOCUMENTS
        for _, language, code, reason in blocks(document)
        if reason is None and language in ("bash", "python")
    ]
    assert len(runnable) >= 10


def script() -> str:
    """The runnable blocks, in order, as one bash script that names each block before it."""
    # A block that fails leaves no server of an earlier block running.
    parts = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for document in DOCUMENTS:
        for line, language, code, reason in blocks(document):
            if reason is not None or language not in ("bash", "python"):
                continue
            parts.append(f'echo "### {document}:{line} at $(date +%T)" >&2')
            if language == "bash":
                parts.append(code)
            else:
                parts.append(f".venv/bin/python - <<'VMFML_PYTHON_BLOCK'\n{code}VMFML_PYTHON_BLOCK")
    return "\n".join(parts) + "\n"


def copy_repository(target: Path) -> None:
    """The files a fresh clone has: tracked ones and new ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.slow
def test_readme_and_tutorial_run_as_written(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to copy")
    if shutil.which("curl") is None:
        pytest.skip("the tutorial's serve block uses curl")
    repo = tmp_path / "vmfml"
    copy_repository(repo)
    (repo / "docs_script.sh").write_text(script())
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    start = time.monotonic()
    result = subprocess.run(
        ["bash", "docs_script.sh"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,  # a safety net, far above the time it takes
    )
    minutes = (time.monotonic() - start) / 60
    output = result.stdout + result.stderr
    ran = re.findall(r"^### (\S+)", result.stderr, re.M)
    assert result.returncode == 0, f"stopped in {ran[-1] if ran else '?'}:\n{output[-6000:]}"
    expected = sum(
        1
        for document in DOCUMENTS
        for _, language, _, reason in blocks(document)
        if reason is None and language in ("bash", "python")
    )
    assert len(ran) == expected
    # What the blocks are there to show.
    assert "results" in result.stdout and "recall@1" in result.stdout
    assert '"status":"ok"' in result.stdout and '"results":[' in result.stdout
    assert (repo / "runs" / "photos" / "model.onnx").is_file()
    assert (repo / "runs" / "photos" / "sneakers.png").is_file()
    print(f"README and tutorial: {minutes:.1f} min")
