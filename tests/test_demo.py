import json

from visionllm_hf.demo import run_demo


def test_demo_reloads_its_checkpoint_and_answers_every_image(tmp_path, capsys):
    results = run_demo(tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    # 32 px tiles, max 4: a 96 px square is big enough for 2x2, the 4:1 and 1:4 scenes get 4x1 and 1x4
    assert {row["image"]: row["grid"] for row in results} == {"square": [2, 2], "wide": [4, 1], "tall": [1, 4]}
    assert all(row["tiles"] == 5 and isinstance(row["answer"], str) and row["answer"] for row in results)
    printed = capsys.readouterr().out
    assert all(name in printed for name in ("square", "wide", "tall"))
