"""A PNG of search results: each query beside its top-k hits, hits framed by correctness.

Layout (all in pixels): rows are queries, column 0 is the query (blue frame), columns 1..k its
hits. Each cell is a `thumb` x `thumb` thumbnail inside a `BORDER`-wide frame, with one line of
text under it (the query's label, or the hit's score and label), and `PAD` between cells. A hit's
frame is green when its label equals the query's, red when it differs, grey when either is unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from vmfml.data import decode
from vmfml.files import atomic_write
from vmfml.index.searcher import Hit, ImageLike

BORDER = 4
PAD = 6
TEXT_H = 14
CORRECT = (46, 160, 67)
WRONG = (207, 34, 46)
UNKNOWN = (150, 150, 150)
QUERY = (9, 105, 218)
BACKGROUND = (255, 255, 255)


def grid_size(n_queries: int, k: int, thumb: int = 96) -> tuple[int, int]:
    """(width, height) of the grid of `n_queries` rows of 1 + k cells."""
    cell = thumb + 2 * BORDER
    return (k + 1) * (cell + PAD) + PAD, n_queries * (cell + TEXT_H + PAD) + PAD


def cell_origin(row: int, col: int, thumb: int = 96) -> tuple[int, int]:
    """Top-left pixel (x, y) of the frame of cell (row, col); column 0 is the query."""
    cell = thumb + 2 * BORDER
    return PAD + col * (cell + PAD), PAD + row * (cell + TEXT_H + PAD)


def hit_color(query_label: str | None, hit_label: str | None) -> tuple[int, int, int]:
    """Green for a correct hit, red for a wrong one, grey when a label is unknown."""
    if query_label is None or hit_label is None:
        return UNKNOWN
    return CORRECT if query_label == hit_label else WRONG


def save_result_grid(
    out: str | Path,
    queries: Sequence[tuple[ImageLike, str | None]],
    results: Sequence[Sequence[Hit]],
    k: int,
    thumb: int = 96,
) -> Path:
    """Draw the results of several queries into one PNG.

    Args:
        out: the PNG to write (folders are created).
        queries: Q pairs (image or path, label or None).
        results: Q lists of at most k hits (`Searcher.search_images` output).
        k: columns of hits (a row with fewer hits leaves cells empty).
        thumb: thumbnail side in pixels.

    Returns:
        the path written; the image is `grid_size(Q, k, thumb)`.
    """
    if len(queries) != len(results):
        raise ValueError(f"{len(queries)} queries but {len(results)} result lists")
    if k < 1 or thumb < 8:
        raise ValueError(f"need k >= 1 and thumb >= 8, got k={k}, thumb={thumb}")
    canvas = Image.new("RGB", grid_size(len(queries), k, thumb), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for row, ((source, query_label), hits) in enumerate(zip(queries, results, strict=True)):
        name = query_label or (
            Path(source).name if not isinstance(source, Image.Image) else "query"
        )
        _draw_cell(canvas, draw, font, row, 0, source, QUERY, f"Q {name}", thumb)
        for col, hit in enumerate(hits[:k], start=1):
            text = f"{hit['score']:.3f} {hit['label'] or ''}".strip()
            color = hit_color(query_label, hit["label"])
            _draw_cell(canvas, draw, font, row, col, hit["path"], color, text, thumb)
    out = Path(out)
    atomic_write(out, lambda tmp: canvas.save(tmp, format="PNG"))
    return out


def _draw_cell(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    row: int,
    col: int,
    source: ImageLike | None,
    color: tuple[int, int, int],
    text: str,
    thumb: int,
) -> None:
    x, y = cell_origin(row, col, thumb)
    side = thumb + 2 * BORDER
    draw.rectangle([x, y, x + side - 1, y + side - 1], fill=color)
    canvas.paste(_thumbnail(source, thumb), (x + BORDER, y + BORDER))
    # Trim the caption to the cell width so neighbouring captions never overlap.
    while text and draw.textlength(text, font=font) > side:
        text = text[:-1]
    draw.text((x, y + side + 1), text, fill=(0, 0, 0), font=font)


def _thumbnail(source: ImageLike | None, thumb: int) -> Image.Image:
    """The image fitted into a white `thumb` square (a grey square if it cannot be read)."""
    tile = Image.new("RGB", (thumb, thumb), BACKGROUND)
    try:
        if isinstance(source, Image.Image):
            image = decode.to_mode(source, "RGB")
        elif source is not None:
            # The decoder every command shares: raster formats only, pixels counted first.
            image = decode.to_mode(decode.open_image(source), "RGB")
        else:
            raise OSError("no path")
    except (OSError, ValueError):  # decode's refusals are ValueErrors
        return Image.new("RGB", (thumb, thumb), (220, 220, 220))
    # Small images (28x28) are enlarged with nearest neighbours to stay crisp, large ones shrunk smoothly.
    resample = Image.Resampling.NEAREST if max(image.size) < thumb else Image.Resampling.BICUBIC
    image = ImageOps.contain(image, (thumb, thumb), method=resample)
    tile.paste(image, ((thumb - image.width) // 2, (thumb - image.height) // 2))
    return tile
