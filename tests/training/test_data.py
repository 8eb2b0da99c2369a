"""LLaVA JSON / messages loading, placeholder handling, path confinement and mixing."""

import json

import pytest

from tests.training.fakes import write_llava_json
from training.data import DataFormatError, DataSource, load_source, load_training_data, mix_datasets
from training.media import MediaError, resolve_media_path


def test_llava_json_rows(tmp_path):
    path = write_llava_json(str(tmp_path), n=4)
    ds = load_training_data([DataSource(path, f"{tmp_path}/images", f"{tmp_path}/videos")])
    assert len(ds) == 4
    both = ds[2]
    assert [b["type"] for b in both["messages"][0]["content"]] == ["video", "image", "text"]
    assert both["images"] == [f"{tmp_path}/images/2.png"] and both["videos"] == [f"{tmp_path}/videos/2.mp4"]
    assert ds[3]["images"] == [] and ds[3]["modality_length"] < 0 < ds[0]["modality_length"]
    assert [m["role"] for m in both["messages"]] == ["user", "assistant", "user", "assistant"]


def test_jsonl_and_list_media_and_missing_placeholder(tmp_path):
    rows = [
        {"id": "a", "image": ["x.png", "y.png"], "conversations": [
            {"from": "human", "value": "<image>\n<image>\nsame ?"}, {"from": "gpt", "value": "no ."}]},
        {"id": "b", "video": "v.mp4", "conversations": [  # no placeholder: inserted first
            {"from": "gpt", "value": "dropped leading gpt turn"},
            {"from": "human", "value": "describe it ."}, {"from": "gpt", "value": "red ."}]},
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_source(DataSource(str(path), str(tmp_path), str(tmp_path)))
    assert len(ds[0]["images"]) == 2
    assert ds[1]["messages"][0]["content"][0]["type"] == "video" and len(ds[1]["messages"]) == 2


def test_messages_format(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "ignored"},
                          {"role": "user", "content": "<video>\nwhat ?"},
                          {"role": "assistant", "content": "a dog ."}],
             "images": [], "videos": ["clip.mp4"]}]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(rows))
    ds = load_source(DataSource(str(path), video_folder=str(tmp_path)))
    assert ds[0]["videos"] == [str(tmp_path / "clip.mp4")]
    assert ds[0]["messages"][0]["content"][0]["type"] == "video"


def test_bad_samples_are_skipped_or_raise_in_strict(tmp_path, caplog):
    rows = [
        {"id": "ok", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yes ."}]},
        {"id": "count", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "x"}]},
        {"id": "escape", "image": "../../etc/passwd", "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]},
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    ds = load_source(DataSource(str(path), image_folder=str(tmp_path / "imgs")))
    assert ds["id"] == ["ok"]
    assert "skipped 2 malformed" in caplog.text
    with pytest.raises(DataFormatError, match="sample count"):
        load_source(DataSource(str(path), image_folder=str(tmp_path / "imgs")), strict=True)


def test_path_confinement(tmp_path):
    assert resolve_media_path(tmp_path, "a/b.png") == str(tmp_path / "a/b.png")
    for bad in ("../x.png", "/etc/passwd", "a/../../x.png"):
        with pytest.raises(MediaError, match="escapes"):
            resolve_media_path(tmp_path, bad)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(MediaError, match="escapes"):
        resolve_media_path(tmp_path, "link/passwd")


def test_mixing_weights(tmp_path):
    from datasets import Dataset

    a = Dataset.from_dict({"x": list(range(10))})
    b = Dataset.from_dict({"x": list(range(100, 104))})
    mixed = mix_datasets([a, b], [0.5, 2.0], seed=0)
    xs = mixed["x"]
    assert len(xs) == 5 + 8 and sum(x >= 100 for x in xs) == 8 and len(set(x for x in xs if x < 100)) == 5
    assert mix_datasets([a, b], [0.5, 2.0], seed=0)["x"] == xs  # deterministic
    with pytest.raises(ValueError, match="positive"):
        mix_datasets([a], [0.0])


GOOD = [{"from": "human", "value": "what colour ?"}, {"from": "gpt", "value": "red ."}]


def test_malformed_records_are_skipped_named_and_counted(tmp_path):
    from training.media import SkipLedger, read_skip_log

    (tmp_path / "imgs").mkdir()
    rows = [
        {"id": "ok1", "conversations": GOOD},
        None,
        "just a string",
        {"id": "conv-str", "conversations": "hello"},
        {"id": "int-path", "image": 5, "conversations": GOOD},
        {"id": "nul", "image": "a\x00b.png", "conversations": GOOD},
        {"id": "msg-str", "messages": "hello"},
        {"id": "turn-list", "conversations": [["human", "hi"]]},
        {"id": "ok2", "conversations": GOOD},
    ]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(rows))
    ledger = SkipLedger(str(tmp_path / "out"), max_skipped_fraction=1.0)
    ds = load_training_data([DataSource(str(path), image_folder=str(tmp_path / "imgs"))], ledger=ledger)
    assert ds["id"] == ["ok1", "ok2"] and ledger.skipped["record"] == 7 and ledger.records == 9
    log = read_skip_log(str(tmp_path / "out"))
    assert [r["kind"] for r in log] == ["record"] * 7
    reasons = [r["reason"] for r in log]
    assert reasons[0] == f"{path}[1] (sample {path}[1]): expected a JSON object, got null"
    assert reasons[1].endswith("expected a JSON object, got str")
    assert reasons[2] == (f"{path}[3] (sample conv-str): 'conversations' must be a list of {{from, value}} objects, "
                          "got str")
    assert reasons[3] == f"{path}[4] (sample int-path): 'image' must be a path or a list of paths, got int 5"
    assert reasons[4].startswith(f"{path}[5] (sample nul): media path ") and "contains a NUL byte" in reasons[4]
    assert "'messages' must be a list" in reasons[5] and f"{path}[7] (sample turn-list): " in reasons[6]
    with pytest.raises(DataFormatError, match=r"d\.json\[1\] .*got null"):
        load_source(DataSource(str(path)), strict=True)
    with pytest.raises(MediaError, match=r"7 of 9 records dropped while loading \({'record': 7}\), more than"):
        load_training_data([DataSource(str(path), image_folder=str(tmp_path / "imgs"))],
                           ledger=SkipLedger(None, max_skipped_fraction=0.5))  # a small run is checked too


def test_parse_errors_name_the_file_and_position(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"id": "a", "conversations": []},\n  {"id": "b",, }\n]')
    with pytest.raises(DataFormatError) as err:
        load_source(DataSource(str(bad)))
    assert str(err.value) == (f"{bad}: not valid JSON: Expecting property name enclosed in double quotes "
                              "(line 3, column 14)")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'[{"id": "caf\xe9"}]')
    with pytest.raises(DataFormatError, match=r"latin\.json: not UTF-8 text \(byte offset 12\)"):
        load_source(DataSource(str(latin)))
    bom = tmp_path / "bom.json"  # a UTF-8 BOM (Windows editors) is accepted
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"id": "x", "conversations": GOOD}]).encode())
    assert load_source(DataSource(str(bom)))["id"] == ["x"]

    lines = tmp_path / "d.jsonl"
    good = json.dumps({"id": "g", "conversations": GOOD}).encode()
    lines.write_bytes(b"\xef\xbb\xbf" + good + b'\n{"id": "cut", "conversa\n' + b'{"id": "\xff"}\n\n' + good + b"\n")
    from training.media import SkipLedger

    ledger = SkipLedger(None, max_skipped_fraction=1.0)
    ds = load_source(DataSource(str(lines)), ledger=ledger)
    assert ds["id"] == ["g", "g"] and ledger.skipped["record"] == 2 and ledger.records == 4
    with pytest.raises(DataFormatError, match=r"d\.jsonl:2 \(sample .*d\.jsonl:2\): not valid JSON: Unterminated "
                                              r"string starting at \(column 15\)"):
        load_source(DataSource(str(lines)), strict=True)
    lines.write_bytes(good + b'\n{"id": "\xff"}\n')
    with pytest.raises(DataFormatError, match=r"d\.jsonl:2 \(sample .*\): not UTF-8 text \(byte offset 8 of the "):
        load_source(DataSource(str(lines)), strict=True)
