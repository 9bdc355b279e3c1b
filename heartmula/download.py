"""`python -m heartmula download`: fetch the official checkpoints into the layout we load.

Uses huggingface_hub. Offline (or with the hub unreachable) it stops with a clear
message; files already present are kept, and each repo lands in its own folder.
"""

from __future__ import annotations

from pathlib import Path

# (hub repo, folder under the model path); "" means the model path itself.
REPOS = {
    "gen": ("HeartMuLa/HeartMuLaGen", ""),
    "3B": ("HeartMuLa/HeartMuLa-oss-3B-happy-new-year", "HeartMuLa-oss-3B"),
    "3B-RL": ("HeartMuLa/HeartMuLa-RL-oss-3B-20260123", "HeartMuLa-oss-3B"),
    "codec": ("HeartMuLa/HeartCodec-oss-20260123", "HeartCodec-oss"),
    "transcriptor": ("HeartMuLa/HeartTranscriptor-oss", "HeartTranscriptor-oss"),
}


def download(model_path: str | Path, which: list[str], progress=print) -> list[Path]:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise RuntimeError("huggingface_hub is not installed: pip install huggingface_hub") from e
    root = Path(model_path).expanduser()
    done = []
    for key in which:
        repo, sub = REPOS[key]
        target = root / sub if sub else root
        progress(f"downloading {repo} into {target} ...")
        try:
            snapshot_download(repo_id=repo, local_dir=str(target), allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
        except Exception as e:
            raise RuntimeError(
                f"could not download {repo} ({type(e).__name__}: {e}). Check the network connection "
                "(or a proxy / HF_ENDPOINT), then run the same command again; finished files are kept."
            ) from e
        done.append(target)
    return done


def add_parser(sub) -> None:
    p = sub.add_parser("download", help="download the official checkpoints from the Hugging Face hub")
    p.add_argument("--model-path", default="./ckpt")
    p.add_argument("--version", default="3B", choices=["3B", "3B-RL"], help="which HeartMuLa weights")
    p.add_argument("--no-transcriptor", action="store_true", help="skip HeartTranscriptor (the demo tiny.en is used)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    which = ["gen", args.version, "codec"] + ([] if args.no_transcriptor else ["transcriptor"])
    for path in download(args.model_path, which):
        print(f"ok: {path}")
    return 0
