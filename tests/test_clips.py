import json
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from visionllm_hf.synthetic.clips import DIRECTIONS, make_clip, shuffled, write_clip_dataset
from visionllm_hf.synthetic.scenes import COLOURS, KINDS


@pytest.fixture(scope="module")
def clips():
    return [make_clip(0, index) for index in range(200)]


def _pixels(clip):
    return np.stack([np.asarray(frame) for frame in clip.frames])


def test_clips_are_deterministic_per_seed_and_index():
    first, again = make_clip(3, 7), make_clip(3, 7)
    assert np.array_equal(_pixels(first), _pixels(again))
    assert [(t.name, t.moves, t.present) for t in first.tracks] == [(t.name, t.moves, t.present) for t in again.tracks]
    assert not np.array_equal(_pixels(first), _pixels(make_clip(3, 8)))
    assert not np.array_equal(_pixels(first), _pixels(make_clip(4, 7)))
    clip = make_clip(1, 2, size=96, num_frames=5)
    assert len(clip.frames) == 5 and clip.frames[0].size == (96, 96)
    assert all(len(t.present) == len(t.masks) == 5 for t in clip.tracks)


def test_the_mover_moves_in_its_direction_and_static_shapes_stay(clips):
    for clip in clips[:60]:
        size = clip.frames[0].size[0]
        mover = clip.mover()
        assert [t.moves is not None for t in clip.tracks].count(True) == 1
        assert mover.moves == clip.direction() in DIRECTIONS
        assert all(mover.present)
        axis = 0 if clip.direction() in ("left", "right") else 1  # x or y
        sign = 1 if clip.direction() in ("right", "down") else -1
        centroids = []
        for mask in mover.masks:
            rows, columns = np.nonzero(mask)
            centroids.append((columns.mean(), rows.mean()))
        along = sign * np.array([c[axis] for c in centroids])
        across = np.array([c[1 - axis] for c in centroids])
        assert (np.diff(along) > 0).all()
        assert along[-1] - along[0] >= 0.3 * size
        assert np.ptp(across) < 1.5
        areas = [mask.sum() for mask in mover.masks]
        assert min(areas) >= 0.9 * max(areas)  # the whole shape in every frame, never cut by the border
        for track in clip.tracks:
            if track is mover:
                continue
            assert track.moves is None and track.kind != mover.kind
            present = [m for m in track.masks if m is not None]
            assert len(present) == sum(track.present) >= 1
            assert all(np.array_equal(present[0], m) for m in present)


def test_masks_match_pixels_and_never_overlap(clips):
    for clip in clips[:40]:
        for t, frame in enumerate(clip.frames):
            pixels = np.asarray(frame).astype(int)
            owner = np.zeros(pixels.shape[:2], dtype=int)
            for track in clip.tracks:
                assert (track.masks[t] is not None) == track.present[t]
                if track.masks[t] is None:
                    assert track.box(t) is None
                    continue
                mask = track.masks[t]
                owner += mask
                assert np.abs(pixels[mask] - COLOURS[track.colour]).max() <= 10
                x1, y1, x2, y2 = track.box(t)
                rows, columns = np.nonzero(mask)
                assert (x1, y1, x2, y2) == (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1)
            assert owner.max() <= 1
            assert np.abs(pixels[owner == 0] - (200, 200, 200)).max() <= 10  # the rest is background


def test_directions_balance_counts_vary_and_shapes_come_and_go(clips):
    directions = Counter(clip.direction() for clip in clips)
    assert set(directions) == set(DIRECTIONS)
    assert all(0.15 <= n / len(clips) <= 0.35 for n in directions.values())
    counts = Counter(clip.count() for clip in clips)
    assert len(counts) >= 3 and set(counts) <= {1, 2, 3}
    changing = [clip for clip in clips if any(not all(t.present) for t in clip.tracks)]
    assert 0.05 * len(clips) <= len(changing) <= 0.5 * len(clips)
    for clip in changing:  # the shape that comes or goes changes the count per frame, not the clip's count
        per_frame = [sum(t.present[i] for t in clip.tracks) for i in range(len(clip.frames))]
        assert len(set(per_frame)) == 2 and max(per_frame) == clip.count()
    assert {clip.mover().kind for clip in clips} == set(KINDS)


def test_captions_name_the_mover_and_shuffling_changes_the_order(clips):
    for clip in clips[:30]:
        mover = clip.mover()
        caption = clip.caption()
        assert caption.startswith(f"a {mover.size} {mover.colour} {mover.kind} moves {mover.moves}")
        assert caption.endswith(".") and (" past " in caption) == (len(clip.tracks) > 1)
        assert all(track.name in caption for track in clip.tracks)
    clip = clips[0]
    rng = random.Random(0)
    for _ in range(10):
        frames = shuffled(clip, rng)
        assert sorted(map(id, frames)) == sorted(map(id, clip.frames))
        assert [id(f) for f in frames] != [id(f) for f in clip.frames]


def test_written_clip_dataset_matches_the_clips_and_is_reproducible(tmp_path):
    paths = write_clip_dataset(tmp_path / "a", num_clips=4, seed=5, num_frames=6)
    again = write_clip_dataset(tmp_path / "b", num_clips=4, seed=5, num_frames=6)
    assert set(paths) == {"root", "clips", "conversations", "masks"}
    records = json.loads(paths["conversations"].read_text())
    masks = json.loads(paths["masks"].read_text())
    assert len(records) == 12 and len(masks) == 4
    for index in range(4):
        clip = make_clip(5, index, num_frames=6)
        video = f"clips/{index:05d}"
        folder = paths["root"] / video
        files = sorted(folder.glob("*.png"))
        assert [f.name for f in files] == [f"frame_{t:02d}.png" for t in range(6)]
        for file, frame in zip(files, clip.frames):
            assert np.array_equal(np.asarray(Image.open(file).convert("RGB")), np.asarray(frame))
        assert file.read_bytes() == (again["root"] / video / file.name).read_bytes()
        answers = {r["task"]: r["conversations"] for r in records if r["video"] == video}
        assert set(answers) == {"video_caption", "video_qa", "video_counting"}
        assert all(c[0]["from"] == "human" and c[0]["value"].startswith("<video>\n") for c in answers.values())
        assert answers["video_caption"][1]["value"] == clip.caption()
        assert answers["video_qa"][1]["value"] == clip.direction()
        assert f"the {clip.mover().kind} move?" in answers["video_qa"][0]["value"]
        assert answers["video_counting"][1]["value"] == str(clip.count())
        record = masks[index]
        assert record["video"] == video and record["direction"] == clip.direction()
        assert (record["kind"], record["colour"]) == (clip.mover().kind, clip.mover().colour)
        for t, (rle, box) in enumerate(zip(record["masks"], record["boxes"])):
            decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)
            assert np.array_equal(decoded, clip.mover().masks[t])
            assert box == clip.mover().box(t)
    for name in ("conversations", "masks"):
        assert paths[name].read_text() == again[name].read_text()
