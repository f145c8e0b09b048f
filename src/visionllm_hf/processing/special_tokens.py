"""The special tokens VisionLLM adds to a tokenizer, keyed by the `VisionLLMConfig` field holding each id."""

IMAGE_TOKEN = "<image>"
REGION_TOKEN = "<region>"
VIDEO_TOKEN = "<video>"
# u-LLaVA's markers around a video's tokens: `<vid_beg>` + spatial and temporal tokens + `</vid_end>`
VIDEO_START, VIDEO_END = "<vid_beg>", "</vid_end>"

SPECIAL_TOKENS = {
    "image_token_id": IMAGE_TOKEN,
    "region_token_id": REGION_TOKEN,
    "det_token_id": "[DET]",
    "seg_token_id": "[SEG]",
    "pose_token_id": "[POSE]",
    "gen_token_id": "[GEN]",
    "edit_token_id": "[EDIT]",
    "loc_token_id": "<LOC>",
    "query_token_id": "<query>",
    "video_token_id": VIDEO_TOKEN,
    "video_start_token_id": VIDEO_START,
    "video_end_token_id": VIDEO_END,
}

# routing name (as in `VisionLLMConfig.routing_decoders`) -> routing token
ROUTING_TOKENS = {"det": "[DET]", "seg": "[SEG]", "pose": "[POSE]", "loc": "<LOC>", "gen": "[GEN]", "edit": "[EDIT]"}
QUERY_TOKEN = "<query>"

__all__ = [
    "IMAGE_TOKEN", "QUERY_TOKEN", "REGION_TOKEN", "ROUTING_TOKENS", "SPECIAL_TOKENS", "VIDEO_END", "VIDEO_START",
    "VIDEO_TOKEN",
]
