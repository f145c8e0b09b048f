"""The visual prompt the user clicks on the image: a box (two opposite corners) or a point (one click).

Clicks are kept as a list of `[x, y]` image pixels; `region_of` turns them into one of the processor's regions
(`{"box": [x1, y1, x2, y2]}` or `{"point": [x, y]}`) and `preview` draws them with `draw_visual_prompts`. Small
images are shown enlarged by a whole factor (`display_factor`), so a click lands where it is meant to;
`image_point` maps a click on the shown image back to the image's pixels.
"""

from PIL import Image

from ..visualization import draw_visual_prompts

BOX = "box"
POINT = "point"
MODES = (BOX, POINT)
COLOUR = (255, 0, 255)  # magenta: seen on the grey synthetic scenes and on photos
DISPLAY_SIDE = 384  # images smaller than this are shown enlarged (the synthetic scenes are 128 px)


def display_factor(image: Image.Image) -> int:
    """How many times larger `image` is shown: a whole number, 1 for images of `DISPLAY_SIDE` px or more."""
    return max(1, DISPLAY_SIDE // max(image.size))


def image_point(image: Image.Image, x: float, y: float) -> tuple[float, float]:
    """The image pixel under a click at `(x, y)` on the shown (maybe enlarged) image."""
    factor = display_factor(image)
    return round(x / factor, 1), round(y / factor, 1)


def add_click(clicks: list, x: float, y: float, mode: str) -> list:
    """
    The clicks after one more at `(x, y)`. A point is replaced by each click; a box takes two clicks with a
    different x and y (a second click on the first corner's row or column starts it again), a third starts a new box.
    """
    click = [float(x), float(y)]
    if mode == POINT or len(clicks) != 1:
        return [click]
    first = clicks[0]
    if first[0] == click[0] or first[1] == click[1]:
        return [click]
    return [first, click]


def region_of(clicks: list, mode: str) -> dict | None:
    """The processor region of the clicks, or None while there is none (no click, or a box's first corner only)."""
    if mode == POINT and clicks:
        return {"point": list(clicks[-1])}
    if mode == BOX and len(clicks) == 2:
        (x1, y1), (x2, y2) = clicks
        return {"box": [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]}
    return None


def describe(clicks: list, mode: str) -> str:
    """One line telling what the prompt is, or what to click next."""
    region = region_of(clicks, mode)
    if region is not None:
        kind, value = next(iter(region.items()))
        return f"{kind} {[round(v) for v in value]}"
    if mode == BOX and clicks:
        x, y = clicks[0]
        return f"first corner at ({round(x)}, {round(y)}): click the opposite corner"
    return "no visual prompt: click two opposite corners of a box on the image" if mode == BOX else (
        "no visual prompt: click a point on the image"
    )


def preview(image: Image.Image, clicks: list, mode: str) -> Image.Image:
    """
    `image` as shown (enlarged by `display_factor`) with the prompt drawn: the box or point, a box's first corner
    as a cross until the second click.
    """
    factor = display_factor(image)
    shown = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    region = region_of(clicks, mode)
    regions = [region] if region is not None else [{"point": list(click)} for click in clicks]
    scaled = [{kind: [value * factor for value in values] for kind, values in item.items()} for item in regions]
    return draw_visual_prompts(shown, scaled, colour=COLOUR)


__all__ = [
    "BOX", "COLOUR", "DISPLAY_SIDE", "MODES", "POINT", "add_click", "describe", "display_factor", "image_point",
    "preview", "region_of",
]
