"""A saved folder is Hub custom code: it loads in a fresh process where our package is not importable."""

import json
import textwrap

import torch

from modeling_videollava import LanguageBindVideoLlavaForConditionalGeneration
from tests.fresh_process import run_fresh
from tests.modeling_videollava.helpers import mixed_batch
from tests.tiny import tiny_config


FRESH = textwrap.dedent(
    """
    import json, sys
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText
    try:
        import modeling_videollava
        sys.exit("our package must not be importable here")
    except ImportError:
        pass
    path, batch_path = sys.argv[1], sys.argv[2]
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True, device_map="auto").eval()
    backbone = AutoModel.from_pretrained(path, trust_remote_code=True)
    batch = torch.load(batch_path)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    print(json.dumps({"module": type(model).__module__, "config": type(config).__name__,
                      "backbone": type(backbone).__name__, "tokens": out.tolist(),
                      "temporal": config.video_config.add_time_attn}))
    """
)


def test_saved_folder_loads_with_trust_remote_code_in_a_fresh_process(tmp_path):
    model = LanguageBindVideoLlavaForConditionalGeneration(tiny_config()).eval()
    model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"}
    batch = mixed_batch(model.config)
    torch.save(batch, tmp_path / "batch.pt")
    with torch.no_grad():
        expected = model.generate(**batch, max_new_tokens=4, do_sample=False).tolist()
    result = run_fresh(FRESH, tmp_path / "model", tmp_path / "batch.pt", cwd=tmp_path,
                       env={"HF_HOME": str(tmp_path / "hf_home")})
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["module"].startswith("transformers_modules.")
    assert (loaded["config"], loaded["backbone"], loaded["temporal"]) == ("LanguageBindVideoLlavaConfig", "LanguageBindVideoLlavaModel", True)
    assert loaded["tokens"] == expected
