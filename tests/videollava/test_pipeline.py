"""The embedded default model through transformers' own surfaces, in a fresh process where our packages cannot be
imported: every Auto class of its `auto_map`, and `pipeline("image-text-to-text", trust_remote_code=True)` answering
image and video chat messages (the video as a content part that the pipeline passes through to our processor) with
the answers of `videollava chat`."""

import json

from tests.chat_answers import chat_answers, sample_questions
from tests.fresh_process import run_fresh
from videollava.loading import DEFAULT_MODEL


FRESH = """
import json, sys
from transformers import (AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText,
                          AutoModelForMultimodalLM, AutoProcessor, AutoTokenizer, pipeline)
path, rows = sys.argv[1], json.loads(sys.argv[2])
classes = {}
for auto in (AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM, AutoProcessor,
             AutoImageProcessor, AutoTokenizer):
    obj = auto.from_pretrained(path, trust_remote_code=True)
    classes[auto.__name__] = [type(obj).__module__.split(".")[0], type(obj).__name__]
pipe = pipeline("image-text-to-text", model=path, trust_remote_code=True)
answers = []
for row in rows:
    if row["kind"] == "image":
        medium = {"type": "image", "url": row["path"]}
    else:  # passed through to our processor, which decodes it with PyAV
        medium = {"type": "video", "video": row["path"]}
    messages = [{"role": "user", "content": [medium, {"type": "text", "text": row["question"]}]}]
    out = pipe(text=messages, max_new_tokens=32, do_sample=False, return_full_text=False)
    answers.append(out[0]["generated_text"])
print(json.dumps({"classes": classes, "pipeline": type(pipe).__name__, "answers": answers}))
"""


def test_default_model_through_auto_classes_and_pipeline_in_a_fresh_process(tmp_path):
    rows = sample_questions()
    assert {r["kind"] for r in rows} == {"image", "video"}
    result = run_fresh(FRESH, DEFAULT_MODEL, json.dumps(rows), cwd=tmp_path, env={"HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    remote = "transformers_modules"
    assert out["classes"] == {
        "AutoConfig": [remote, "LanguageBindVideoLlavaConfig"],
        "AutoModel": [remote, "LanguageBindVideoLlavaModel"],
        "AutoModelForImageTextToText": [remote, "LanguageBindVideoLlavaForConditionalGeneration"],
        "AutoModelForMultimodalLM": [remote, "LanguageBindVideoLlavaForConditionalGeneration"],
        "AutoProcessor": [remote, "LanguageBindVideoLlavaProcessor"],
        "AutoImageProcessor": [remote, "LanguageBindImageProcessor"],
        "AutoTokenizer": ["transformers", "TokenizersBackend"],
    }
    assert out["pipeline"] == "ImageTextToTextPipeline"
    # the pipeline decodes with a leading space (" up"); `videollava chat` prints the stripped answer
    assert [a.strip() for a in out["answers"]] == list(chat_answers())
    assert list(chat_answers()) == [r["model_answer"] for r in rows]  # as recorded when the model was trained
