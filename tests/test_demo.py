import json

from PIL import Image

from visionllm_hf.demo import run_demo, tasks_for


def test_demo_runs_every_task_and_writes_pictures_and_json(tiny_checkpoint, tmp_path, capsys):
    results = run_demo(tmp_path, model_path=tiny_checkpoint, max_new_tokens=6, num_scenes=1, photos=False)
    assert json.loads((tmp_path / "results.json").read_text()) == results
    assert {row["task"] for row in results} == {task["task"] for task in tasks_for({"expression": "the x", "kind": "circle", "box": [0, 0, 1, 1], "point": [0, 0]})}
    for row in results:
        picture = Image.open(tmp_path / row["picture"])
        assert picture.size == (128, 128)
    printed = capsys.readouterr().out
    assert "interactive segmentation" in printed and "results.json" in printed
