"""Evaluation for Video-LLaVA: generation runner, judge, per-benchmark metrics, paper-layout report.

Run as:
    videollava eval --task msvd_qa --model DIR_OR_ID --data DIR --output DIR
    videollava eval --task msvd_qa --predictions predictions.jsonl --judge-model gpt-3.5-turbo
    videollava eval --report OUT_DIR [OUT_DIR ...]
"""
