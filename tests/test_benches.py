"""Every script in benches/ runs in its smoke mode (smallest sizes, one repeat), so none can rot unnoticed."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"


def run_bench(name: str, *arguments: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCHES / name), "--smoke", *arguments],
        capture_output=True, text=True, timeout=600, cwd=BENCHES.parent,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def test_every_bench_has_a_smoke_test():
    tested = {"vs_llava.py", "superlink.py", "v1_decoding.py", "learning.py", "v1_learning.py", "predict.py",
              "your_data.py", "gpu.py", "preprocessing.py", "app.py", "video.py", "in_context.py"}
    assert {path.name for path in BENCHES.glob("*.py")} == tested


def test_vs_llava_smoke_compares_identical_models_on_every_row():
    out = run_bench("vs_llava.py", "--threads", "1")
    difference = float(re.search(r"logits max \|ours - LLaVA\| = (\S+)", out).group(1))
    assert difference < 1e-4  # same weights: the timings compare code paths
    metrics = ("prefill b1", "decode b1", "decode b8", "decode b1 +decoders", "decode b8 +decoders",
               "decode b8 static +decoders", "train step b2", "peak mem decode b8 +decoders", "peak mem train step b2")
    for metric in metrics:
        assert re.search(rf"^{re.escape(metric)}: ratio \d+\.\d+ (meets|within noise of|MISSES)", out, re.M), metric
    assert re.search(r"^routed batch 8 / batch 1: \d+\.\d+x", out, re.M)


def test_gpu_smoke_runs_the_real_size_code_path_on_the_cpu():
    out = run_bench("gpu.py")
    assert float(re.search(r"logits max \|ours - LLaVA\| = (\S+)", out).group(1)) < 1e-4
    for metric in ("prefill b1", "decode b1", "decode-only b1", "decode b8", "decode-only b8"):
        assert re.search(rf"^{re.escape(metric)}\s+\S+\s+\d+\.\d+\s+\d+\.\d+\s+\d+\.\d+$", out, re.M), metric
    assert re.search(r"^decode-only b8: [\d.]+ GB per step", out, re.M)


def test_preprocessing_smoke_compares_the_same_resizes():
    out = run_bench("preprocessing.py", "--threads", "1")
    rows = re.findall(r"^(1 tile|v2 tiling)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$", out, re.M)
    assert [row[0] for row in rows] == ["1 tile", "v2 tiling"], out
    assert all(float(row[4]) < 0.05 for row in rows)  # the same resizes: about one grey level apart


def test_superlink_smoke_needs_no_extra_forward_for_routing_tokens_inside_the_answer():
    out = run_bench("superlink.py")
    rows = re.findall(r"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)", out, re.M)
    assert [int(row[0]) for row in rows] == [0, 1, 4]
    assert all(row[1] == row[2] for row in rows), rows  # as many LLM forwards as a plain answer


def test_v1_decoding_smoke_decodes_in_parallel():
    out = run_bench("v1_decoding.py")
    assert re.search(r"parallel .*1 forward.*ms", out) and re.search(r"speed-up: \d+\.\dx", out)


def test_predict_smoke_reports_images_per_second_at_batch_1_and_8():
    out = run_bench("predict.py")
    rates = dict(re.findall(r"^\s+(\d+)\s+(\d+\.\d+)$", out, re.M))
    assert sorted(rates) == ["1", "8"] and all(float(rate) > 0 for rate in rates.values()), out
    assert re.search(r"^batch 8 / batch 1: \d+\.\d+x$", out, re.M)


@pytest.mark.parametrize("name", ["learning.py", "v1_learning.py"])
def test_learning_benches_smoke_train_evaluate_and_report(name, tmp_path):
    out = run_bench(name, "--out", str(tmp_path))
    if name == "learning.py":  # every stage of the recipe ran, and eval scored the result against the goals
        assert "steps: clip 2, llm 2, v2-pretrain 2, v2-tune 5, v2-decoders 5" in out
        for metric in ("detection AP50", "REC P@0.5", "counting exact match", "caption CIDEr"):
            assert re.search(rf"^{re.escape(metric)}\s+\d\.\d{{3}}", out, re.M), metric
        assert re.search(r"^counting image reliance\s+-?\d\.\d{3}", out, re.M)
        assert re.search(r"^total \d+\.\d min$", out, re.M)
    else:
        assert "4 steps of 4" in out
        assert re.search(r"AP50 \(all categories asked\)\s+\d\.\d{3}", out)
    assert (tmp_path / "metrics.json").is_file()


def test_your_data_smoke_compares_zero_shot_with_fine_tuned(tmp_path):
    out = run_bench("your_data.py", "--out", str(tmp_path))
    for metric in ("detection AP50", "REC P@0.5", "counting exact match"):
        assert re.search(rf"^{re.escape(metric)}\s+\d\.\d{{3}}\s+\d\.\d{{3}}$", out, re.M), metric
    assert re.search(r"^counting, most common\s+\d\.\d{3}$", out, re.M)


def test_app_smoke_serves_and_answers_a_detection():
    pytest.importorskip("gradio_client")
    out = run_bench("app.py")
    assert re.search(r"start to serving\s+[\d.]+", out) and re.search(r"detection request \(median\)\s+[\d.]+", out)


def test_video_smoke_trains_on_clips_and_scores_time_against_chance(tmp_path):
    out = run_bench("video.py", "--out", str(tmp_path))
    assert "recipe stage0: v2-tune 2 steps of 2 clips" in out
    for metric in ("direction, frames in order", "direction, frames shuffled", "counting, frames in order",
                   "direction, chance", "counting, most common count", "masklet mean IoU, [SEG] then tracker",
                   "masklet mean IoU, truth on frame 0 then tracker", "masklet mean IoU, truth on frame 0 kept, no tracker"):
        assert re.search(rf"^{re.escape(metric)}\s+\d\.\d{{3}}$", out, re.M), metric
    assert (tmp_path / "metrics.json").is_file()
    drilled = json.loads((tmp_path / "drill2" / "config.json").read_text())
    assert drilled["video_temporal_tokens"] == "frame_changes" and drilled["video_token_id"] is not None


def test_in_context_smoke_compares_with_and_without_examples(tmp_path):
    out = run_bench("in_context.py", "--out", str(tmp_path))
    for metric in ("AP50, with examples", "AP50, without examples", "AP50, shipped demo, with examples",
                   "kind named, with examples", "kind named, without examples", "kind named, chance"):
        assert re.search(rf"^{re.escape(metric)}\s+\d\.\d{{3}}$", out, re.M), metric
