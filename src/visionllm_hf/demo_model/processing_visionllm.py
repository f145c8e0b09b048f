"""VisionLLM processor: tokenizer + dynamic-resolution image processor, expanding each `<image>` to its tokens.

This file ships with every checkpoint (``trust_remote_code``): it imports only torch, transformers and its
siblings in this folder.
"""

import math
import re
import warnings

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin

from .image_processing_visionllm import VisionLLMImagesKwargs, flatten_images
from .regions import is_region, rasterize_region
from .post_processing import post_process_generation
from .special_tokens import IMAGE_TOKEN, QUERY_TOKEN, REGION_TOKEN, ROUTING_TOKENS, VIDEO_END, VIDEO_START, VIDEO_TOKEN
from .tasks import NEEDS_NO_IMAGE, task_request
from .video_loading import load_video

NO_ANSWER = -100  # pads the rows of `forced_answer_ids` (the model's `answer_forcing.py` reads them)


class VisionLLMProcessorKwargs(ProcessingKwargs, total=False):
    """Keyword arguments of [`VisionLLMProcessor`]: the tokenizer's (`text_kwargs`) and the image options."""

    images_kwargs: VisionLLMImagesKwargs


class VisionLLMProcessor(ProcessorMixin):
    r"""
    Prepares text and images for [`VisionLLMForConditionalGeneration`].

    Each `<image>` in the text is replaced by `(tiles of that image) * image_seq_length` copies of `<image>`, the
    positions the model fills with image features. Each `<region>` stays one token, filled with the embedding
    of one visual prompt. Batches are padded on the tokenizer's padding side (left for generation).

    Args:
        image_processor ([`VisionLLMImageProcessor`]):
            Tiles images.
        tokenizer ([`PreTrainedTokenizerBase`]):
            A tokenizer in which `<image>` is one special token.
        chat_template (`str`, *optional*):
            Jinja template used by `apply_chat_template`.
        super_link_queries (`dict[str, int]`, *optional*):
            Routing token -> number of `<query>` tokens inserted after it in every text (the model's
            `super_link_queries` for its routed names), so training sequences and conversation history hold
            the queries exactly where generation puts them.
        num_frames (`int`, *optional*, defaults to 8):
            Frames sampled uniformly from each video (u-LLaVA's T = 8). A `<video>` becomes `<vid_beg>`, then
            `image_seq_length + num_frames` `<video>` tokens (the spatial tokens: patch features averaged over
            time; the temporal tokens: each frame's features averaged over space, or their frame-to-frame
            changes, see `VisionLLMConfig.video_temporal_tokens`), then `</vid_end>`.
    """

    valid_processor_kwargs = VisionLLMProcessorKwargs
    text_kwargs = {"padding": True}  # defaults, overridden per call (transformers' processor kwargs convention)

    def __init__(
        self, image_processor=None, tokenizer=None, chat_template=None, super_link_queries=None, num_frames: int = 8,
        **kwargs,
    ):
        self.super_link_queries = dict(super_link_queries or {})
        self.num_frames = num_frames
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
        self.image_token = IMAGE_TOKEN
        self.image_token_id = self._token_id(IMAGE_TOKEN)
        if self.image_token_id is None:
            raise ValueError(f"the tokenizer has no {IMAGE_TOKEN} token; build it with `visionllm-hf build`")
        self.video_token = VIDEO_TOKEN
        self.video_token_id = self._token_id(VIDEO_TOKEN)  # None for a checkpoint built without video support

    def _token_id(self, token: str) -> int | None:
        token_id = self.tokenizer.convert_tokens_to_ids(token)
        return None if token_id is None or token_id == self.tokenizer.unk_token_id else token_id

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        regions=None,
        task: str | None = None,
        categories: list[str] | list[list[str]] | None = None,
        expression: str | list[str] | None = None,
        videos=None,
        num_frames: int | None = None,
        decoder_image: int | list[int] | None = None,
        **kwargs,
    ) -> BatchFeature:
        r"""
        Args:
            images (*optional*):
                One image, a flat list consumed in `<image>` order across the batch, or one list per sample.
                Each image is a path, `PIL.Image`, numpy HWC array or torch CHW tensor.
            text (`str` or `list[str]`):
                Prompts; each `<image>` marks where one image goes, each `<region>` where one region goes. With a
                `task`, only the question of `vqa` / `prompt` (one per sample, or one for all).
            task (`str`, *optional*):
                Ask a task by name instead of writing the prompt (see `tasks.py`): `caption`, `vqa`, `detection`,
                `instance_segmentation`, `pose`, `grounding`, `referring_segmentation`, `region_caption`,
                `region_classification`, `interactive_segmentation`, `text_to_image`, `image_editing`, `prompt`.
                The prompt is the chat template
                around the task's instruction (one sample per image), and perception tasks add
                `forced_answer_ids`, the answer structure `generate` then follows (`cat [DET], dog [DET].`).
            categories (`list[str]` or one list per sample, *optional*): what `detection`, `instance_segmentation`
                and `pose` look for.
            expression (`str` or one per sample, *optional*): what `grounding` / `referring_segmentation` find.
            regions (*optional*):
                Visual prompts, laid out like `images` (one list per image, or per sample one list per image),
                each a box, point, scribble, polygon or mask (see `regions.py`). A sample's `<region>`
                placeholders take its regions in order: those of its first image, then its second, ...
            **kwargs:
                transformers' processor keyword arguments, flat or grouped: the tokenizer's (`padding` (default
                `True`), `padding_side`, `truncation`, `max_length`, `return_tensors` (default `"pt"`), ... or
                `text_kwargs={...}`) and the image options of [`VisionLLMImagesKwargs`] (`max_tiles`,
                `do_normalize`, ... or `images_kwargs={...}`). An image option that does not apply raises.

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask`; with images, `pixel_values` and `image_grids`;
            with regions, `region_masks` (`(num_regions, tile, tile)` bool masks over each image's global view)
            and `region_image_index` (index of each region's image in the batch's flat image list); with videos,
            `pixel_values_videos` (`(num_videos, num_frames, 3, tile, tile)`) and, with decoders,
            `decoder_pixel_values_videos` (the frames at the decoders' resolution); with decoders,
            `decoder_pixel_values` (one image per sample) and `decoder_image_index` (that image's index in the
            batch's flat image list, -1 for none); with a perception `task`, `forced_answer_ids` (`(batch,
            length)`, padded with -100).
        """
        if task is not None:
            if videos is not None:
                raise ValueError(
                    f"task '{task}' asks about images; for a video write the prompt with {VIDEO_TOKEN} and pass videos="
                )
            return self._task_inputs(task, images, text, regions, categories, expression, decoder_image=decoder_image, **kwargs)
        if text is None:
            raise ValueError("text is required: each <image> in it marks where an image goes")
        if not isinstance(text, (str, list, tuple)):
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise ValueError("text is an empty list: give one prompt per sample")
        if not all(isinstance(sample, str) for sample in texts):
            raise TypeError("text must be a string or a list of strings")
        texts = [self.insert_queries(sample) for sample in texts]
        merged = self._merge_kwargs(VisionLLMProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs, images_kwargs = merged["text_kwargs"], merged["images_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", None) or "pt"
        images_kwargs.pop("return_tensors", None)
        images_per_sample = self._assign_images(images, texts)
        loaded_images = [self.image_processor.load(image, **images_kwargs) for image in flatten_images(images_per_sample)]

        data = {}
        if regions is not None or any(REGION_TOKEN in sample for sample in texts):
            data.update(self._prepare_regions(regions, texts, images_per_sample, loaded_images))
        image_tokens_per_sample = [0] * len(texts)
        if loaded_images:
            image_inputs = self.image_processor.tile_loaded(loaded_images, return_tensors="pt", **images_kwargs)
            grids = iter(image_inputs["image_grids"].tolist())
            expanded = []
            for index, sample in enumerate(texts):
                pieces = sample.split(IMAGE_TOKEN)
                counts = [self.image_processor.num_image_tokens(next(grids)) for _ in pieces[1:]]
                image_tokens_per_sample[index] = sum(counts)
                expanded.append(pieces[0] + "".join(IMAGE_TOKEN * n + piece for n, piece in zip(counts, pieces[1:])))
            texts = expanded
            data.update(image_inputs)
        frames_per_sample, video_tokens_per_sample = [[] for _ in texts], [0] * len(texts)
        if videos is not None or any(VIDEO_TOKEN in sample for sample in texts):
            texts, frames_per_sample, video_inputs = self._prepare_videos(videos, texts, num_frames, images_kwargs)
            video_tokens_per_sample = [len(frames) * self._tokens_per_video(num_frames) for frames in frames_per_sample]
            data.update(video_inputs)
        if self.image_processor.decoder_image_size and (loaded_images or videos is not None):
            data.update(self._decoder_inputs(images_per_sample, frames_per_sample, decoder_image))

        text_inputs = self.tokenizer(texts, return_tensors=return_tensors, **text_kwargs)
        self._check_token_counts(text_inputs["input_ids"], self.image_token_id, image_tokens_per_sample, "image")
        self._check_token_counts(text_inputs["input_ids"], self.video_token_id, video_tokens_per_sample, "video")
        self._warn_past_model_length(text_inputs["attention_mask"])
        data.update(text_inputs)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _task_inputs(self, task, images, text, regions, categories, expression, **kwargs) -> BatchFeature:
        """The inputs of a task asked by name: one chat prompt per sample and, for perception, its forced answer."""
        if images is None and task not in NEEDS_NO_IMAGE:
            raise ValueError(f"task '{task}' needs images (one per sample)")
        if images is None:  # text to image: one sample per prompt
            per_sample = [[] for _ in ([text] if isinstance(text, str) else text or [None])]
        else:
            per_sample = images if isinstance(images, (list, tuple)) else [images]
            per_sample = [list(item) if isinstance(item, (list, tuple)) else [item] for item in per_sample]
        count = len(per_sample)
        region_counts = [0] * count if regions is None else [len(flatten_images(item)) for item in regions]
        if len(region_counts) != count:
            raise ValueError(f"regions must hold one list per sample ({count} samples), got {len(region_counts)}")
        requests = [
            task_request(
                task,
                categories=_for_sample(categories, row, count, "categories", nested=True),
                expression=_for_sample(expression, row, count, "expression"),
                prompt=_for_sample(text, row, count, "text"),
                num_regions=region_counts[row],
            )
            for row in range(count)
        ]
        prompts = []
        for sample_images, request, regions_here in zip(per_sample, requests, region_counts):
            question = request.question
            if regions_here and REGION_TOKEN not in question:
                question = " ".join([REGION_TOKEN] * regions_here) + " " + question
            content = [{"type": "image"} for _ in sample_images] + [{"type": "text", "text": question}]
            prompts.append(self.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True))
        inputs = self(images=per_sample if images is not None else None, text=prompts, regions=regions, **kwargs)
        answers = [self.answer_token_ids(request.answer) if request.answer else [] for request in requests]
        if any(answers):
            width = max(map(len, answers))
            padded = [answer + [NO_ANSWER] * (width - len(answer)) for answer in answers]
            inputs["forced_answer_ids"] = torch.tensor(padded, dtype=torch.long)
        return inputs

    def answer_token_ids(self, answer: str) -> list[int]:
        """
        The ids the model samples to give `answer`: its tokens in a training sequence (the chat template's
        assistant turn, after `ASSISTANT:`), without the `<query>` tokens generation inserts itself and without
        the closing end-of-sequence token. Tokenising the answer alone differs at its first token (`circle` ->
        `c ir cle` instead of `Ġcircle`).
        """
        question = [{"role": "user", "content": "?"}]
        prompt = self.apply_chat_template(question, add_generation_prompt=True)
        full = self.apply_chat_template([*question, {"role": "assistant", "content": answer}], tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the answer after the generation prompt")
        encoded = self.tokenizer(full, return_offsets_mapping=True)
        ids = [token for token, (start, _) in zip(encoded["input_ids"], encoded["offset_mapping"]) if start >= len(prompt)]
        query_id = self.tokenizer.convert_tokens_to_ids(QUERY_TOKEN)
        ids = [token for token in ids if token != query_id]
        if not ids or ids[-1] != self.tokenizer.eos_token_id:
            raise ValueError(f"could not find the answer {answer!r} in its training sequence {full!r}")
        return ids[:-1]

    def insert_queries(self, text: str) -> str:
        """
        Put `super_link_queries[token]` `<query>` tokens after each routing token. `<query>` tokens already right
        after a routing token (a decoded answer fed back as history) are replaced; any other `<query>` raises, as
        it is reserved for the super link.
        """
        routing = "|".join(re.escape(token) for token in ROUTING_TOKENS.values())
        text = re.sub(f"({routing})(?:{re.escape(QUERY_TOKEN)})+", r"\1", text)
        if QUERY_TOKEN in text:
            raise ValueError(
                f"the text holds a {QUERY_TOKEN} token that does not follow a routing token: {QUERY_TOKEN} is "
                "reserved for the super-link queries the processor inserts itself; remove it from the text"
            )
        for token, count in self.super_link_queries.items():
            if count:
                text = text.replace(token, token + QUERY_TOKEN * count)
        return text

    def apply_chat_template(self, conversation, *args, **kwargs):
        """
        transformers' `apply_chat_template`, after checking that no user or system turn types a routing token
        (`[DET]`, `[SEG]`, ...) or `<query>`: those tokens belong to the model's answers, and typed into a question
        they would become routing tokens (not text). Ask in words, or with a task prompt.
        """
        conversations = conversation if conversation and isinstance(conversation[0], (list, tuple)) else [conversation]
        for messages in conversations:
            for turn, message in enumerate(messages):
                if isinstance(message, dict) and message.get("role") in ("user", "system"):
                    _check_no_answer_tokens(message.get("content"), turn, message["role"])
        return super().apply_chat_template(conversation, *args, **kwargs)

    def post_process_generation(
        self, outputs, target_sizes=None, threshold: float = 0.3, nms_threshold: float | None = 0.5,
        mask_threshold: float = 0.5,
    ):
        """
        Text and structured objects for every sample of a `generate` output of a model with decoders.

        Args:
            outputs (`VisionLLMGenerateOutput`): what `model.generate` returned.
            target_sizes (`list[tuple[int, int]]`, *optional*): `(height, width)` of each sample's image; boxes,
                masks and keypoints are returned in those pixels. Without it, boxes stay normalised to [0, 1] and
                masks keep the decoder's resolution.
            threshold (`float`, *optional*, defaults to 0.3): `[DET]` / `[POSE]` candidates (one per decoder
                query) scoring below it are dropped, as Grounding DINO's post-processing drops them; other routing
                tokens give their one answer whatever its score. 0 keeps every candidate (what COCO AP needs).
            nms_threshold (`float`, *optional*, defaults to 0.5): `[DET]` / `[POSE]` candidates overlapping a
                better one of the same routing token by more IoU than this are dropped (torchvision's NMS);
                None keeps them.
            mask_threshold (`float`, *optional*, defaults to 0.5): probability above which a mask pixel is set.

        Returns:
            `list[dict]`, per sample `{"text": str, "objects": [{"label", "routing", "score", "box", "mask",
            "keypoints"}], "images": [{"label", "routing", "image"}]}` (`images` holds the PIL images `[GEN]` and
            `[EDIT]` made), objects of one routing token best first. `label` is the answer text between the
            previous routing token (or the start of the answer) and this one, trimmed of spaces and punctuation
            (`""` when there is none); `box` is xyxy; `mask` a boolean array; fields a decoder does not produce
            are None.
        """
        return post_process_generation(self.tokenizer, outputs, target_sizes, threshold, mask_threshold, nms_threshold)

    def _assign_images(self, images, texts: list[str]) -> list[list]:
        """Split `images` into one list per sample and check each sample's count against its placeholders."""
        placeholders = [sample.count(IMAGE_TOKEN) for sample in texts]
        if images is None:
            if any(placeholders):
                raise ValueError(
                    f"the text has {sum(placeholders)} {IMAGE_TOKEN} placeholders but no images were given"
                )
            return [[] for _ in texts]
        nested = isinstance(images, (list, tuple)) and len(images) == len(texts) and all(
            isinstance(item, (list, tuple)) for item in images
        )
        if nested:
            for index, (sample_images, count) in enumerate(zip(images, placeholders)):
                if len(sample_images) != count:
                    raise ValueError(
                        f"sample {index} has {count} {IMAGE_TOKEN} placeholders but {len(sample_images)} images"
                    )
            return [list(sample_images) for sample_images in images]
        flat = flatten_images(images)
        if len(flat) != sum(placeholders):
            raise ValueError(
                f"the text has {sum(placeholders)} {IMAGE_TOKEN} placeholders but {len(flat)} images were given"
            )
        ends = torch.tensor(placeholders).cumsum(0).tolist()
        return [flat[end - count : end] for end, count in zip(ends, placeholders)]

    def _tokens_per_video(self, num_frames: int | None) -> int:
        return self.image_processor.image_seq_length + (num_frames or self.num_frames)

    def _prepare_videos(self, videos, texts: list[str], num_frames: int | None, images_kwargs: dict):
        """
        Texts with each `<video>` expanded to `<vid_beg>`, its tokens and `</vid_end>`; per sample the first frame
        of each of its videos (the decoders' image of a video); and `pixel_values_videos`.
        """
        if self.video_token_id is None:
            raise ValueError(
                f"this checkpoint's tokenizer has no {VIDEO_TOKEN} token, so it cannot read videos; train it on "
                "video data with `visionllm-hf train`, which adds <video>, <vid_beg> and </vid_end> (as does "
                "`visionllm-hf build` for a new checkpoint)"
            )
        num_frames = num_frames or self.num_frames
        placeholders = [sample.count(VIDEO_TOKEN) for sample in texts]
        if videos is None:
            raise ValueError(f"the text has {sum(placeholders)} {VIDEO_TOKEN} placeholders but no videos were given")
        flat = list(videos) if isinstance(videos, (list, tuple)) and _is_list_of_videos(videos) else [videos]
        if len(flat) != sum(placeholders):
            raise ValueError(
                f"the text has {sum(placeholders)} {VIDEO_TOKEN} placeholders but {len(flat)} videos were given"
            )
        options = self.image_processor._call_options(images_kwargs)
        rescale = options.get("do_rescale", True)
        factor = options.get("rescale_factor", self.image_processor.rescale_factor) if rescale else 1.0
        loaded = []
        for number, video in enumerate(flat):
            try:
                loaded.append(load_video(video, num_frames, factor))
            except (ValueError, TypeError) as error:
                raise type(error)(f"video {number}: {error}") from None
        count = self._tokens_per_video(num_frames)
        expanded_video = VIDEO_START + VIDEO_TOKEN * count + VIDEO_END
        texts = [sample.replace(VIDEO_TOKEN, expanded_video) for sample in texts]
        ends = torch.tensor(placeholders).cumsum(0).tolist()
        frames_per_sample = [[frames[0] for frames in loaded[end - n : end]] for end, n in zip(ends, placeholders)]
        data = {"pixel_values_videos": self.image_processor.video_pixel_values(loaded, **images_kwargs)}
        if self.image_processor.decoder_image_size:  # a [SEG] on a video's first frame is tracked through them all
            data["decoder_pixel_values_videos"] = torch.stack([self.image_processor.decoder_images(frames) for frames in loaded])
        return texts, frames_per_sample, data

    def _decoder_inputs(self, images_per_sample: list[list], first_frames: list[list], decoder_image) -> dict:
        """
        Per sample the image its decoders read (`decoder_image` of its images, else its first video's first
        frame, else a blank one) at the decoders' scale, and that image's index in the batch's image list.
        """
        count = len(images_per_sample)
        wanted_per_sample = decoder_image if isinstance(decoder_image, (list, tuple)) else [decoder_image] * count
        if len(wanted_per_sample) != count:
            raise ValueError(f"decoder_image must be shared or given once per sample ({count} samples), got "
                             f"{len(wanted_per_sample)}")
        chosen, flat_index, first_image = [], [], 0
        for row, (sample_images, frames) in enumerate(zip(images_per_sample, first_frames)):
            wanted = -1 if wanted_per_sample[row] is None else wanted_per_sample[row]
            if not isinstance(wanted, int) or isinstance(wanted, bool):
                raise TypeError(f"decoder_image must be an image index (int) or one per sample, got {wanted!r}")
            if sample_images:
                if not -len(sample_images) <= wanted < len(sample_images):
                    raise ValueError(
                        f"decoder_image {wanted} is out of range for sample {row}, which has {len(sample_images)} images"
                    )
                position = wanted % len(sample_images)
                chosen.append(sample_images[position])
                flat_index.append(first_image + position)
            else:
                chosen.append(frames[0] if frames else None)
                flat_index.append(-1)
            first_image += len(sample_images)
        # the decoders read the image at its standard scale, whatever the per-call rescaling of the tiles
        return {
            "decoder_pixel_values": self.image_processor.decoder_images(chosen),
            "decoder_image_index": torch.tensor(flat_index, dtype=torch.long),
        }

    def _prepare_regions(self, regions, texts: list[str], images_per_sample: list[list], loaded_images: list) -> dict:
        """Rasterise every region over its image's global view and check counts against `<region>` per sample."""
        placeholders = [sample.count(REGION_TOKEN) for sample in texts]
        regions_per_image = _regions_per_image(regions, images_per_sample)
        image_processor = self.image_processor
        cell_size = image_processor.tile_size / math.isqrt(image_processor.image_seq_length)
        masks, image_index = [], []
        first_image = 0
        for sample, (sample_images, count) in enumerate(zip(images_per_sample, placeholders)):
            sample_regions = [
                (first_image + offset, region)
                for offset in range(len(sample_images))
                for region in regions_per_image[first_image + offset]
            ]
            if len(sample_regions) != count:
                raise ValueError(
                    f"sample {sample} has {count} {REGION_TOKEN} placeholders but {len(sample_regions)} regions"
                )
            for number, (image, region) in enumerate(sample_regions):
                size = tuple(loaded_images[image].shape[1:])
                where = f"sample {sample}, region {number}"
                masks.append(rasterize_region(region, size, image_processor.tile_size, cell_size, where))
                image_index.append(image)
            first_image += len(sample_images)
        if not masks:
            return {}
        return {"region_masks": torch.stack(masks), "region_image_index": torch.tensor(image_index)}

    def _warn_past_model_length(self, attention_mask):
        limit = self.tokenizer.model_max_length
        if limit is None or limit > 1e9:  # the tokenizer's "no limit known"
            return
        lengths = [int(torch.as_tensor(mask).sum()) for mask in attention_mask]
        too_long = [(index, length) for index, length in enumerate(lengths) if length > limit]
        if too_long:
            index, length = too_long[0]
            warnings.warn(
                f"sample {index} is {length} tokens long (images included), more than the {limit} positions the "
                "model was trained for: its answer is unreliable. Use fewer or smaller images (max_tiles) or "
                "shorter text.",
                stacklevel=3,
            )

    @staticmethod
    def _check_token_counts(input_ids, token_id: int | None, expected: list[int], what: str):
        """Each sample holds exactly the `<image>` / `<video>` tokens its images / videos take."""
        if token_id is None:
            return
        for index, (ids, count) in enumerate(zip(input_ids, expected)):
            found = int((torch.as_tensor(ids) == token_id).sum())
            if found != count:
                raise ValueError(
                    f"sample {index} should hold {count} {what} tokens after tokenisation but holds {found}; "
                    f"truncation may have cut into its {what}s, or the text contains stray {what} tokens"
                )

    @property
    def model_input_names(self) -> list[str]:
        """What a call with text and images returns (with regions, also `region_masks` and `region_image_index`)."""
        names = list(self.tokenizer.model_input_names) + list(self.image_processor.model_input_names)
        if self.image_processor.decoder_image_size:
            names += ["decoder_pixel_values", "decoder_image_index"]
        return names


def _for_sample(value, row: int, count: int, name: str, nested: bool = False):
    """A per-call value for sample `row`: shared by every sample, or given one per sample."""
    if value is None or isinstance(value, str):
        return value
    per_sample = isinstance(value, (list, tuple)) and (not nested or all(isinstance(v, (list, tuple)) for v in value))
    if not per_sample:
        return list(value)  # nested: one list of categories for every sample
    if len(value) != count:
        raise ValueError(f"{name} must be shared or given once per sample ({count} samples), got {len(value)}")
    return list(value[row]) if nested else value[row]


def _is_list_of_videos(videos) -> bool:
    """A list whose items are videos (lists of frames, 4-D arrays, paths) rather than one video's frames."""
    def is_video(item) -> bool:
        if isinstance(item, (list, tuple, str)) or hasattr(item, "__fspath__"):
            return True
        return getattr(item, "ndim", 0) == 4

    return all(is_video(item) for item in videos)


def _check_no_answer_tokens(content, turn: int, role: str):
    texts = [content] if isinstance(content, str) else [
        part.get("text", "") for part in content or [] if isinstance(part, dict) and part.get("type") == "text"
    ]
    reserved = [*ROUTING_TOKENS.values(), QUERY_TOKEN]
    for text in texts:
        typed = [token for token in reserved if token in text]
        if typed:
            raise ValueError(
                f"message {turn} ({role}) types {typed}: routing tokens and {QUERY_TOKEN} belong to the model's "
                "answers and would not be read as text; ask in words (e.g. 'detect the cars') or use a task prompt"
            )


def _regions_per_image(regions, images_per_sample: list[list]) -> list[list]:
    """Regions as one list per image of the batch, from a per-image list or a per-sample list of per-image lists."""
    num_images = sum(len(sample) for sample in images_per_sample)
    if regions is None:
        return [[] for _ in range(num_images)]
    if not isinstance(regions, (list, tuple)):
        raise TypeError("regions must be a list with one list of regions per image")

    def is_region_list(value) -> bool:
        return isinstance(value, (list, tuple)) and all(is_region(item) for item in value)

    if len(regions) == num_images and all(is_region_list(item) for item in regions):
        return [list(item) for item in regions]
    per_sample_ok = len(regions) == len(images_per_sample) and all(
        isinstance(sample, (list, tuple)) and len(sample) == len(images) and all(map(is_region_list, sample))
        for sample, images in zip(regions, images_per_sample)
    )
    if per_sample_ok:
        return [list(item) for sample in regions for item in sample]
    raise ValueError(
        f"regions must hold one list of regions per image ({num_images} images), or per sample one such list "
        "per image of that sample"
    )


VisionLLMProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["VisionLLMProcessor"]
