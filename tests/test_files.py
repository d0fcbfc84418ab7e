"""Run outputs (metrics, history, config, reports, plots) are replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmfml.files import save_figure_atomic, temp_entries, write_text_atomic


def test_text_is_replaced_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    write_text_atomic(target, '{"recall@1": 0.5}')
    assert target.read_text() == '{"recall@1": 0.5}'

    def killed(self: Path, text: str) -> None:  # the process dies halfway through the write
        with open(self, "w") as f:
            f.write(text[:3])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, '{"recall@1": 0.9}')
    monkeypatch.undo()
    assert target.read_text() == '{"recall@1": 0.5}' and temp_entries(target) == []


def test_figures_are_png_and_a_failed_save_keeps_the_old_one(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    target = tmp_path / "curves.png"
    save_figure_atomic(fig, target, dpi=50)
    first = target.read_bytes()
    assert first.startswith(b"\x89PNG\r\n\x1a\n")

    class Broken:
        def savefig(self, *args: object, **kwargs: object) -> None:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_figure_atomic(Broken(), target, dpi=50)
    assert target.read_bytes() == first and temp_entries(target) == []
    plt.close(fig)
