"""A data error in a DataLoader worker process reaches the user as its own one-line message,
not as torch's "Caught ValueError in DataLoader worker process 0. Original Traceback ..."."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from vmfml.data import image_folder
from vmfml.data.errors import DataError, reraise_worker_errors, worker_message


def folder_with_a_corrupt_image(root: Path) -> Path:
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (8, 8), 30 * i).save(root / name / f"{i}.png")
    bad = root / "b" / "3.png"
    bad.write_bytes(b"not an image")
    return bad


def test_an_unreadable_image_in_a_worker_keeps_its_message(tmp_path: Path) -> None:
    """Any DataLoader, as the training loop builds it: no wrapper needed."""
    bad = folder_with_a_corrupt_image(tmp_path / "images")
    dataset = image_folder(tmp_path / "images", mode="L")
    with pytest.raises(DataError) as err:
        for _ in DataLoader(dataset, batch_size=2, num_workers=2):
            pass
    message = str(err.value)
    assert message.startswith(f"cannot read image {bad}: ")
    assert "\n" not in message and "Caught" not in message and "Traceback" not in message
    assert isinstance(err.value, ValueError)  # the CLIs report ValueErrors as one line


class Failing(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 2:
            raise ValueError(f"bad item {index}")
        return torch.zeros(2)


def test_reraise_worker_errors_gives_any_type_its_message() -> None:
    loader = DataLoader(Failing(), batch_size=1, num_workers=2)
    with pytest.raises(ValueError) as err:
        list(reraise_worker_errors(loader))
    assert str(err.value) == "bad item 2"
    # Without the wrapper: torch's whole traceback.
    with pytest.raises(ValueError, match="Caught ValueError in DataLoader worker process"):
        list(DataLoader(Failing(), batch_size=1, num_workers=2))


def test_worker_message_reads_torchs_text() -> None:
    text = (
        "Caught DataError in DataLoader worker process 1.\nOriginal Traceback (most recent call "
        'last):\n  File "x.py", line 1, in f\nvmfml.data.errors.DataError: cannot read image '
        "a.png: OSError: two\nlines\n"
    )
    assert worker_message(text, DataError) == "cannot read image a.png: OSError: two\nlines"
    assert worker_message("plain message", DataError) is None
    assert str(DataError(text)) == "cannot read image a.png: OSError: two\nlines"
    assert str(DataError("plain")) == "plain"
    assert DataError("x").args == ("x",)
