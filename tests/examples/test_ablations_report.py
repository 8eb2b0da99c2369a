"""`docs/ablations.md` is written from the runs' JSON: mean +- sample std over seeds, and a verdict that follows the
numbers (reproduced / within the spread / not reproduced)."""

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

from ablations_report import mean_std, write_report  # noqa: E402


def _run(seed: int, video: float, image: float) -> dict:
    entry = lambda a: {"correct": 0, "total": 0, "accuracy": a}  # noqa: E731
    return {"options": {"seed": seed}, "seconds": {"total": 10.0},
            "accuracy": {"by_medium": {"video": entry(video), "video static": entry(video),
                                       "video temporal": entry(video), "image": entry(image)}}}


def _results(method_video: list[float]) -> dict:
    base = [_run(s, v, 0.5) for s, v in enumerate([0.50, 0.52, 0.54])]
    method = [_run(s, v, 0.6) for s, v in enumerate(method_video)]
    variants = [{"variant": "video-only", "role": "baseline", "runs": base},
                {"variant": "joint image+video", "role": "method", "runs": method}]
    return {"settings": {"seeds": [0, 1, 2], "stage1_steps": 1, "stage2_steps": 2, "num_train": 3, "num_heldout": 4,
                         "towers": {"image": {"aligned": {"text_to_image_r1": 0.5}},
                                    "video": {"aligned": {"text_to_video_r1": 0.25}}}},
            "ablations": {"joint_training": variants}}


def test_mean_and_sample_std_in_percent():
    mean, std = mean_std([0.5, 0.52, 0.54])
    assert round(mean, 6) == 52.0 and round(std, 6) == 2.0
    assert mean_std([0.25]) == (25.0, 0.0)


def test_report_table_and_verdicts_follow_the_numbers():
    clear = write_report(_results([0.70, 0.72, 0.74]))
    assert "| video-only | 52.0 ± 2.0 | 52.0 ± 2.0 | 52.0 ± 2.0 | 50.0 ± 0.0 | 0, 1, 2 |" in clear
    assert "| joint image+video | 72.0 ± 2.0 |" in clear
    assert "+20.0 points" in clear and "reproduced: the method is better" in clear
    assert "text→image R@1 50.0 %" in clear
    within = write_report(_results([0.53, 0.55, 0.51]))
    assert "within the seeds' spread" in within
    worse = write_report(_results([0.40, 0.41, 0.42]))
    assert "not reproduced" in worse
