"""`videollava serve`: an OpenAI-compatible server for one Video-LLaVA, on transformers' serving stack.

Run as:
    videollava serve                                           # the embedded tiny model on http://127.0.0.1:8000
    videollava serve --model out/videollava-7b --host 127.0.0.1 --port 8000 --device cuda --dtype bfloat16
    videollava serve --model converted/Video-LLaVA-7B --load-4bit --media-cache-mb 2048    # 4-bit LLM, bigger cache

Endpoints: `POST /v1/chat/completions` (JSON, or server-sent events with `"stream": true`) and `GET /v1/models`,
plus the rest of `transformers serve`'s app. Content parts: `text`, `image_url` and `video_url` (a `data:` URL, an
`http(s)://` URL, a local path or `sample:NAME`), several per message; videos are sampled with the model's frame
count and their audio is never decoded. A part that cannot be read is an HTTP 400 naming it; another model name is a
404. Decoding follows the model's generation config (greedy for the embedded model); `"temperature": 0` forces
greedy. Loading flags (`--device`, `--dtype`, `--device-map`, `--load-4bit`, `--load-8bit`, `--quantize`) are those
of `videollava chat` (`videollava.loading`). Encoded media are kept in an LRU shared by all requests
(`--media-cache-mb`, default 512 MiB): the same clip again, as a path, `data:` URL or `http(s)://` URL, is neither
decoded nor encoded again. The app itself is built in `videollava/serve_app.py`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .loading import DEFAULT_MODEL, ChatError, add_loading_arguments, first_line, options_from_args, resolve_device
from .media import DEFAULT_CACHE_MB


logger = logging.getLogger(__name__)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option as one `error:` line (no usage block) and exits with status 2."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.__class__ = _ArgumentParser  # the dispatcher builds a plain parser; report errors on one line
    parser.add_argument("--model", help="model folder or Hub id (default: the tiny model shipped in the package)")
    parser.add_argument("--model-name", default=None,
                        help="the id clients send as `model` (default: --model as given, or videollava/default_model)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="listen port (default 8000)")
    parser.add_argument("--max-new-tokens", type=int, default=256,
                        help="answer length when a request gives no max_tokens (default 256)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow Hub custom code for models that are not this package's (ours never need it)")
    parser.add_argument("--enable-cors", action="store_true", help="allow requests from any origin (browsers)")
    parser.add_argument("--media-cache-mb", type=int, default=DEFAULT_CACHE_MB,
                        help="memory bound of the encoded-media LRU shared by all requests "
                             f"(default {DEFAULT_CACHE_MB} MiB; 0 = off)")
    add_loading_arguments(parser)


def _check_address(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ChatError(f"--host {host}: unknown address ({exc.strerror})") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(address)
        except OSError as exc:
            raise ChatError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def run(args: argparse.Namespace) -> int:
    verbose = logging.getLogger().isEnabledFor(logging.DEBUG)
    try:
        if args.max_new_tokens < 1:
            raise ChatError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
        if not 0 <= args.port <= 65535:
            raise ChatError(f"--port must be between 0 and 65535, got {args.port}")
        if args.media_cache_mb < 0:
            raise ChatError(f"--media-cache-mb must be >= 0, got {args.media_cache_mb}")
        options = options_from_args(args)
        if options.device_map is None:
            resolve_device(options.device)  # a bad --device fails before anything loads
        try:
            import uvicorn

            from .media import MediaCache
            from .serve_app import ServeError, build_app, served_model
        except ImportError as exc:
            raise ChatError(f"videollava serve needs the serve extra: pip install -e '.[serve]' "
                            f"({first_line(exc)})") from exc
        _check_address(args.host, args.port)  # before the model loads: a taken port fails at once
        from transformers.utils import logging as hf_logging

        if not verbose:
            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
        try:
            served = served_model(args.model, DEFAULT_MODEL, options, args.model_name)
            app, _ = build_app(served, args.max_new_tokens, MediaCache(args.media_cache_mb * 2**20),
                               enable_cors=args.enable_cors)
        except ServeError as exc:
            raise ChatError(str(exc)) from exc
        logger.info("serving %s (%s%s) at http://%s:%d/v1 (POST /v1/chat/completions, GET /v1/models)",
                    served.name, served.path, f", {options.bits}-bit" if options.bits else "", args.host, args.port)
        server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port,
                                               log_level="debug" if verbose else "info"))
        server.run()
        return 0 if server.started else 1
    except ChatError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - an unexpected failure: one line, the traceback with -v
        if verbose:
            raise
        hint = "run `videollava -v serve ...` for details"
        sys.stderr.write(f"error: {type(exc).__name__}: {first_line(exc)} ({hint})\n")
        return 1


__all__ = ["add_arguments", "run"]
