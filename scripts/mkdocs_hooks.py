"""MkDocs hook: the home page is the README, and links from the docs to files of the repository are checked.

``docs/index.md`` is a placeholder: the site's home page is ``README.md`` itself (its ``docs/...`` links made
relative), so the two cannot drift apart.

A link whose target is not a documentation page but a file of the repository (``benchmarks/results/x.md``,
``confkd/config.py``, ``reports/figures/...png``) is checked to exist, so a moved or deleted file fails the
build, and rewritten to a path relative to the built site (``site/`` inside the repository).
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(\]\()([^)#\s]+)(#[^)\s]*)?(\))")


def on_page_markdown(markdown, page, config, files):
    docs_dir = Path(config["docs_dir"])
    if page.file.src_path == "index.md":  # the home page IS the README (one source), its docs/ links made local
        markdown = (REPO / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")

    def fix(match: re.Match) -> str:
        target = match.group(2)
        if "://" in target or target.startswith("mailto:"):
            return match.group(0)
        if (docs_dir / Path(page.file.src_path).parent / target).exists():
            return match.group(0)  # a documentation page or asset: MkDocs checks it
        if not (REPO / target).exists():
            raise PluginError(f"{page.file.src_path}: link to '{target}', which is neither a page nor a file of "
                              "the repository")
        up = "../" * (page.url.count("/") + 1)
        return f"{match.group(1)}{up}{target}{match.group(3) or ''}{match.group(4)}"

    return LINK.sub(fix, markdown)
