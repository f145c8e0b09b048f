"""Task-guided instruction templates for region tasks, and parsers that read the answers back.

The templates come from the papers' appendices: VisionLLM v2 (paper 002, tables A13, A14 and A16) for region
captions and recognition, RegionGPT (paper 003, table 1) for closed-set classification and referring
expression comprehension, u-LLaVA (paper 004) for video captions. `<regions>` in a template is replaced by the region placeholders, e.g.
`"region1 <region>, region2 <region>"`.
"""

import random
import re

REGION_PLACEHOLDER = "<region>"

DETAILED_REGION_CAPTION = [
    "Can you provide a detailed description of <regions> in the image?",
    "From what you see in the image, could you paint a vivid picture of what <regions> looks like?",
    "What stands out to you the most about <regions> depicted in the image? Could you describe it in detail?",
    "I'm interested in this image, especially in the <regions>. Can you provide a comprehensive description of it?",
    "I'd like to learn about the detailed information of <regions> in this image. "
    "Can you describe its characteristics in depth?",
    "The <regions> in this image seems fascinating. Can you delve into its description, highlighting its notable "
    "aspects?",
    "Can you paint a vivid picture of the scenery within <regions> captured in the image?",
    "Could you provide a detailed account of the environmental characteristics within <regions> in the image?",
    "I'm seeking more information about <regions> in the image. Could you provide a comprehensive overview?",
    "Please help me write a detailed description for <regions> in the image.",
]

BRIEF_REGION_CAPTION = [
    "Can you provide me with a brief description of <regions> in the picture?",
    "I'm curious about the region represented by <regions> in the picture. Could you describe it in short?",
    "What can you tell me about <regions> in the image?",
    "I'd like to know more about the area in the photo labeled <regions>. Can you give me a brief description?",
    "Could you describe <regions> in the picture in short?",
    "What content can you give me about <regions> in the photo?",
    "Please provide me with a short description of <regions> in the image.",
    "Can you give me a brief account of the region labeled as <regions> in the picture?",
    "I'm interested in learning more about <regions> in the photo. Can you describe it in short?",
    "What is the region outlined by <regions> in the picture like? Could you give me a brief description?",
]

REGION_RECOGNITION = [
    "What is the object category of <regions>?",
    "Could you tell me what is the object in <regions>?",
    "What category best describes the area represented by <regions>?",
    "Can you specify the type of object inside the region labeled by <regions>?",
    "How would you label the area indicated by <regions> in the image?",
    "Give a category label to the region outlined by <regions>.",
    "Please identify the category of the object inside the <regions>.",
    "Examine and determine the primary subject located within <regions>.",
    "I need your help to assign an object category to the <regions>, please.",
    "Evaluate the content of the region shown as <regions> and provide its category.",
]
OPEN_RECOGNITION_GUIDE = "Answer the question with a single word or phrase."
CLOSED_RECOGNITION_GUIDE = "Answer the question using {category_set} category names."

REFERRING_COMPREHENSION = [
    'From the provided masks denoted by <regions>, which one fits "{expression}"?',
    'Which of the regions <regions> matches the description "{expression}"?',
    'Among <regions>, which region does "{expression}" refer to?',
    'Match the object with its description: "{expression}". The candidates are <regions>.',
]
REFERRING_GUIDE = "Answer the question using the template Region [x]."
NO_MATCH_ANSWER = "No corresponding options found."

VIDEO_CAPTION = [  # u-LLaVA (paper 004), appendix: templates for video captioning
    "Describe the video concisely.",
    "What's happening in this video?",
    "Write a terse but informative summary of the video.",  # the paper prints "the VCR", read here as the video
]

TEMPLATES = {
    "region_caption_detailed": DETAILED_REGION_CAPTION,
    "region_caption_brief": BRIEF_REGION_CAPTION,
    "region_recognition": REGION_RECOGNITION,
    "referring_comprehension": REFERRING_COMPREHENSION,
}


def region_list(count: int) -> str:
    """`region1 <region>, region2 <region>, ...` (the v2 naming), or a bare `<region>` for one region."""
    if count < 1:
        raise ValueError(f"a region task needs at least one region, got {count}")
    if count == 1:
        return REGION_PLACEHOLDER
    return ", ".join(f"region{index} {REGION_PLACEHOLDER}" for index in range(1, count + 1))


def region_caption_prompt(num_regions: int = 1, detailed: bool = False, rng: random.Random | None = None) -> str:
    """A region caption instruction (brief or detailed) with `num_regions` placeholders."""
    templates = DETAILED_REGION_CAPTION if detailed else BRIEF_REGION_CAPTION
    return _choose(templates, rng).replace("<regions>", region_list(num_regions))


def region_classification_prompt(category_set: str | None = None, rng: random.Random | None = None) -> str:
    """
    A region recognition instruction for one region. With `category_set` (e.g. `"COCO-80"`) the answer is
    guided to that closed set, as RegionGPT does; without it, to a single word or phrase.
    """
    guide = CLOSED_RECOGNITION_GUIDE.format(category_set=category_set) if category_set else OPEN_RECOGNITION_GUIDE
    return f"{_choose(REGION_RECOGNITION, rng).replace('<regions>', REGION_PLACEHOLDER)} {guide}"


def referring_comprehension_prompt(expression: str, num_regions: int, rng: random.Random | None = None) -> str:
    """Which of `num_regions` given regions the expression refers to; answered `Region [x]` or no match."""
    template = _choose(REFERRING_COMPREHENSION, rng).format(expression=expression)
    return f"{template.replace('<regions>', region_list(num_regions))} {REFERRING_GUIDE}"


def referring_comprehension_answer(region_number: int | None) -> str:
    """The target answer: `Region [x]` (1-based, as in the prompt) or the no-match sentence."""
    return NO_MATCH_ANSWER if region_number is None else f"Region [{region_number}]."


_REGION_ANSWER = re.compile(r"region\s*\[?\s*(\d+)\s*\]?", re.IGNORECASE)


def parse_region_answer(answer: str) -> int | None:
    """
    The 1-based region number in an answer such as `Region [2].`, or None for "No corresponding options found"
    or an answer naming no region.
    """
    if NO_MATCH_ANSWER.rstrip(".").lower() in answer.lower():
        return None
    match = _REGION_ANSWER.search(answer)
    return int(match.group(1)) if match else None


def parse_category_answer(answer: str, categories: list[str]) -> str | None:
    """
    The category an answer names: an exact (case-insensitive) match first, else the longest category name
    contained in the answer as whole words ("traffic light" before "light"). None when no category matches.
    """
    normalised = _normalise(answer)
    by_name = {_normalise(name): name for name in categories}
    if normalised in by_name:
        return by_name[normalised]
    for name in sorted(by_name, key=len, reverse=True):
        if re.search(rf"\b{re.escape(name)}\b", normalised):
            return by_name[name]
    return None


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s-]", " ", text.lower()).split())


def _choose(templates: list[str], rng: random.Random | None) -> str:
    return templates[0] if rng is None else rng.choice(templates)


__all__ = [
    "NO_MATCH_ANSWER",
    "TEMPLATES",
    "VIDEO_CAPTION",
    "parse_category_answer",
    "parse_region_answer",
    "referring_comprehension_answer",
    "referring_comprehension_prompt",
    "region_caption_prompt",
    "region_classification_prompt",
    "region_list",
]
