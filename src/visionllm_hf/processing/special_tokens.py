"""The special tokens VisionLLM adds to a tokenizer, keyed by the `VisionLLMConfig` field holding each id."""

IMAGE_TOKEN = "<image>"
REGION_TOKEN = "<region>"

SPECIAL_TOKENS = {
    "image_token_id": IMAGE_TOKEN,
    "region_token_id": REGION_TOKEN,
    "det_token_id": "[DET]",
    "seg_token_id": "[SEG]",
    "pose_token_id": "[POSE]",
    "gen_token_id": "[GEN]",
    "edit_token_id": "[EDIT]",
    "loc_token_id": "<LOC>",
}

__all__ = ["IMAGE_TOKEN", "REGION_TOKEN", "SPECIAL_TOKENS"]
