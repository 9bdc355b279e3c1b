"""HeartMuLa Studio: `python app.py [--model-path ./ckpt] [--host 127.0.0.1] [--port 7860] ...`

Loads the engine, builds the UI, queues and launches; nothing else. Flag names match
`load_engine`'s keywords. Without a checkpoint in --model-path the studio falls back to the
demo weights (when heartmula.demo is available) and says plainly that they make noise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("heartmula.studio")
# Uploads (Transcribe clips) larger than this are refused by the server before they reach a handler:
# a 15-minute clip (the transcriber's limit) is 173 MB as 48 kHz 16-bit stereo WAV.
MAX_FILE_SIZE = "200mb"


def parse_args(argv=None) -> argparse.Namespace:
    from heartmula import DEVICE_SYNTAX, QUANT_MODES, parse_device_arg

    p = argparse.ArgumentParser(description="HeartMuLa Studio: generate songs from lyrics in the browser")
    p.add_argument("--model-path", default="./ckpt", help="checkpoint folder (holds HeartMuLa-oss-<version>/)")
    p.add_argument("--version", default="3B", help="HeartMuLa version in the folder (3B, ...)")
    p.add_argument("--device", default="auto", type=parse_device_arg, help=DEVICE_SYNTAX)
    p.add_argument("--codec-device", default=None, type=parse_device_arg, help="device of the codec (default: --device)")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--lazy-load", action="store_true", help="free each model after its phase (less memory)")
    p.add_argument("--quant", default="none", choices=QUANT_MODES,
                   help="int8: the language model's weights as int8 (about half the memory; experimental)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model blocks (faster generation and decoding; compiles at start-up)")
    p.add_argument("--no-warmup", action="store_true", help="skip the start-up warm-up (graph capture, compile)")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 serves your whole network: use --auth")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login")
    p.add_argument("--output-dir", default="./outputs", help="where History keeps the songs")
    p.add_argument("--allowed-model-root", action="append", default=None, metavar="FOLDER",
                   help="a folder whose sub-folders the Settings tab may load models from (repeatable; "
                        "default: the folder holding --model-path)")
    p.add_argument("--max-file-size", default=MAX_FILE_SIZE, help=f"upload size limit (default {MAX_FILE_SIZE})")
    return p.parse_args(argv)


def serving_warning(host: str, auth) -> str | None:
    """The banner printed when the studio is reachable from other machines without a login."""
    if auth is not None or host in ("127.0.0.1", "localhost", "::1"):
        return None
    banner = "!" * 78
    return (f"\n{banner}\n  WARNING: --host {host} without --auth: ANYONE on your network can use this studio,\n"
            f"  run jobs on your device and read your songs. Add --auth USER:PASS.\n{banner}")


def _auth(value: str | None):
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        sys.exit("--auth must be USER:PASS (both non-empty)")
    return (user, password)


def _has_checkpoint(model_path: str, version: str) -> bool:
    from heartmula import find_versions

    return version in find_versions(model_path)


def _demo_bundle():
    """The demo checkpoint folder, or None where heartmula.demo is not available."""
    try:
        from heartmula.demo import ensure_demo_bundle
    except ImportError:
        return None
    return ensure_demo_bundle()


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    auth = _auth(args.auth)
    warning = serving_warning(args.host, auth)
    if warning:
        log.warning(warning)

    from heartmula import load_engine

    model_path, version, demo = args.model_path, args.version, False
    if not _has_checkpoint(model_path, version):
        bundle = _demo_bundle()
        if bundle is None:
            from heartmula import find_versions

            found = find_versions(model_path)
            hint = f" (found versions: {', '.join(found)}; pass --version)" if found else ""
            sys.exit(f"no HeartMuLa-oss-{version} in {model_path}{hint}. Download the models with:\n"
                     f"  python -m heartmula download --model-path {model_path}")
        log.warning("no checkpoint in %s: using the DEMO weights in %s (they make noise). "
                    "Download the real models: python -m heartmula download --model-path ./ckpt", model_path, bundle)
        model_path, version, demo = str(bundle), "demo", True

    try:
        engine = load_engine(model_path, version=version, device=args.device, codec_device=args.codec_device,
                             dtype=args.dtype, lazy_load=args.lazy_load, compile=args.compile, quant=args.quant)
    except (RuntimeError, ValueError) as e:
        sys.exit(f"could not load the model: {e}")

    from heartmula import prune_tree, sweep_outputs

    output_dir = Path(args.output_dir).expanduser().resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    sweep_outputs(output_dir)  # what a crash left: .part files, audio whose sidecar is gone
    # This instance's own temporary tree (uploads, transcripts, renders), private to its user:
    # with gradio's shared default (/tmp/gradio) a file uploaded to one studio was served by
    # every other one. Set before gradio is imported: some of its modules read it at import.
    temp_dir = output_dir / ".studio-tmp"
    temp_dir.mkdir(mode=0o700, exist_ok=True)
    temp_dir.chmod(0o700)
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir / "gradio")

    from starlette.middleware import Middleware

    from ui.blocks import build_ui
    from ui.guard import Guard, parse_size
    from ui.studio import TEMP_MAX_AGE_S
    roots = args.allowed_model_root or [Path(args.model_path).expanduser().resolve().parent]
    if demo:
        roots = [*roots, Path(model_path).parent]
    demo_ui = build_ui(engine, output_dir=output_dir, demo=demo, model_roots=roots, temp_dir=temp_dir / "studio")
    prune_tree(temp_dir, TEMP_MAX_AGE_S)
    demo_ui.queue(default_concurrency_limit=1)
    # Served files: the outputs folder and gradio's own upload/cache folder, nothing else.
    # Guard: body size caps on every route, login back-off, and no route but the login page's
    # without a login (ui/guard.py says what gradio leaves open).
    guard = Middleware(Guard, auth=auth is not None, max_file_size=parse_size(args.max_file_size))
    # uvicorn takes a client's address from X-Forwarded-For when the connection comes from
    # 127.0.0.1: anyone on this machine could then forge a fresh address per login and slip past
    # the back-off. Trust no proxy unless the user names one (FORWARDED_ALLOW_IPS).
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
    demo_ui.launch(server_name=args.host, server_port=args.port, auth=auth, allowed_paths=[str(output_dir)],
                   max_file_size=args.max_file_size, footer_links=["api", "settings"],
                   app_kwargs={"middleware": [guard]}, prevent_thread_lock=True)
    # once the page is served: start-up is not slowed by it
    demo_ui.studio.warm = not args.no_warmup
    demo_ui.studio.warm_in_background(engine)
    demo_ui.block_thread()
    return 0


if __name__ == "__main__":
    sys.exit(main())
