"""Answer questions about an image and a video with any Video-LLaVA folder or Hub repo, through transformers' Auto
classes only (what a user of the uploaded Hub code runs).

Run as:
    python examples/inference.py --model converted/Video-LLaVA-7B --video clip.mp4 --image photo.jpg \
        --question "What happens in the video, and how does the photo relate to it?"
"""

import argparse

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder or Hub id")
    parser.add_argument("--video", action="append", default=[], help="video file (repeatable)")
    parser.add_argument("--image", action="append", default=[], help="image file (repeatable)")
    parser.add_argument("--question", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(
        args.model, trust_remote_code=True, device_map="auto", dtype=dtype
    )
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)

    content = [{"type": "video", "video": path} for path in args.video]
    content += [{"type": "image", "image": Image.open(path)} for path in args.image]
    content.append({"type": "text", "text": args.question})
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": content}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    ).to(model.device)
    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    print(answer.strip())


if __name__ == "__main__":
    main()
