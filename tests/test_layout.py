"""The package's layout is a rule, not a habit: imports point down the pipeline."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "heartmula"
FOLDERS = ("mula", "codec", "asr", "accel", "library")
# What each folder may import from the package, besides itself (and the standard library, torch, ...).
ALLOWED = {
    "accel": set(),  # and options.py, a leaf every folder may use
    "mula": {"accel", "audio", "checkpoint"},
    "codec": {"accel", "audio", "checkpoint"},
    "asr": {"accel", "audio"},
    "library": {"audio", "mula", "asr"},  # a preset is partial GenerateOptions and TranscribeOptions
}
LEAVES = {"options"}  # declarations every folder may use; they import nothing of the package


def package_imports(path: Path, here: tuple[str, ...] | None = None) -> set[str]:
    """The heartmula sub-modules (first name under heartmula/) that `path` imports, relative or
    absolute; `here` is its folder under heartmula/ (read from the path by default)."""
    here = path.relative_to(PKG).parts[:-1] if here is None else here
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(here[: len(here) - (node.level - 1)]) if node.level > 1 else list(here)
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts] if node.module else [base + [a.name] for a in node.names]
            elif node.module and node.module.split(".")[0] == "heartmula":
                names = [node.module.split(".")[1:]] or [[]]
            else:
                continue
            out.update(n[0] for n in names if n)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("heartmula."))
    return out


def test_each_folder_imports_only_what_lies_below_it():
    for folder in FOLDERS:
        for path in (PKG / folder).glob("*.py"):
            extra = package_imports(path) - ALLOWED[folder] - LEAVES - {folder}
            assert not extra, f"{path.relative_to(PKG)} imports {sorted(extra)}"


def test_the_codec_never_imports_the_language_model():
    for path in (PKG / "codec").glob("*.py"):
        assert "mula" not in package_imports(path), path
    # nor through the shared modules it does import
    for shared in ("checkpoint.py", "audio.py", "options.py"):
        assert not package_imports(PKG / shared) - {"accel"}, shared


def test_the_rule_catches_upward_imports(tmp_path):
    """The checker itself: each way a codec file could import mula/ is reported."""
    for line in ("from ..mula.model import HeartMuLa", "from .. import mula", "from heartmula.mula import model",
                 "import heartmula.mula.model"):
        probe = tmp_path / "probe.py"
        probe.write_text(line + "\n")
        assert "mula" in package_imports(probe, here=("codec",)), line
