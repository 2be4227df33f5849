"""Stream clean article text out of a MediaWiki `pages-articles` XML dump (.xml or .xml.bz2).

The XML is parsed incrementally (the .bz2 is decompressed as a stream) and each page is
freed once read, so memory does not grow with the dump. Markup is removed by
wikiextractor's cleaner (templates, tables, refs, link targets, bold/italic quotes,
comments); only namespace-0 articles that are not redirects are kept.
"""
from __future__ import annotations

import bz2
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ulmfit_cli.errors import UlmfitError

logging.getLogger("wikiextractor").setLevel(logging.ERROR)  # it warns per article about templates
from wikiextractor.extract import Extractor  # noqa: E402

_FORMULA = re.compile(r"\b(?:formula|codice)_\d+\b")
_DISAMBIG = re.compile(r"\{\{\s*(?:disambig|disambiguation|dab|hndis|geodis|surname|given name)\b[^}]*\}\}", re.I)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def is_dump(path: Path) -> bool:
    """A bz2 stream or an XML file (dumps keep their names, e.g. `...-pages-articles1.xml-p10p30302.bz2`)."""
    if path.name.endswith((".xml", ".bz2")):
        return True
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    return head.startswith((b"BZh", b"<?xml", b"<mediawiki"))


@dataclass
class DumpStats:
    pages: int = 0
    articles: int = 0
    skipped: dict = field(default_factory=lambda: {"namespace": 0, "redirect": 0, "disambiguation/list": 0,
                                                   "too short": 0})


def clean_wikitext(title: str, wikitext: str) -> str:
    """Article wikitext -> plain paragraphs joined by newlines."""
    paragraphs = Extractor(0, 0, "", title, []).clean_text(wikitext, expand_templates=False, html_safe=False)
    text = "\n".join(p.strip() for p in paragraphs if p.strip())
    return _FORMULA.sub("", text)


def iter_articles(path: Path, stats: DumpStats | None = None, min_chars: int = 0) -> Iterator[str]:
    """Yield the clean text of each article of the dump, in dump order."""
    stats = stats if stats is not None else DumpStats()
    with open(path, "rb") as f:
        opener = bz2.open if f.read(3) == b"BZh" else open
    try:
        with opener(path, "rb") as f:
            root = None
            for event, elem in ET.iterparse(f, events=("start", "end")):
                tag = _local(elem.tag)
                if root is None:
                    if tag != "mediawiki":
                        raise UlmfitError(f"{path}: not a MediaWiki XML export (root element <{tag}>, "
                                          f"expected <mediawiki>)")
                    root = elem
                    continue
                if event != "end" or tag != "page":
                    continue
                stats.pages += 1
                text = _page(elem, path, stats, min_chars)
                root.clear()  # drop finished pages: constant memory
                if text:
                    stats.articles += 1
                    yield text
    except ET.ParseError as e:
        raise UlmfitError(f"{path}: the XML is malformed or truncated ({e}); "
                          f"after {stats.pages} pages") from None
    except (OSError, EOFError) as e:
        raise UlmfitError(f"{path}: cannot read the dump ({e}); a truncated or corrupted download? "
                          f"after {stats.pages} pages") from None


def _page(page: ET.Element, path: Path, stats: DumpStats, min_chars: int) -> str | None:
    fields = {_local(c.tag): c for c in page}
    if (fields.get("ns") is not None and fields["ns"].text != "0"):
        stats.skipped["namespace"] += 1
        return None
    if "redirect" in fields:
        stats.skipped["redirect"] += 1
        return None
    title = fields["title"].text if "title" in fields else ""
    revision = fields.get("revision")
    text_el = None if revision is None else next((c for c in revision if _local(c.tag) == "text"), None)
    wikitext = (text_el.text or "") if text_el is not None else ""
    if wikitext.lstrip().lower().startswith("#redirect"):
        stats.skipped["redirect"] += 1
        return None
    if title.endswith("(disambiguation)") or title.startswith("List of") or _DISAMBIG.search(wikitext):
        stats.skipped["disambiguation/list"] += 1
        return None
    text = clean_wikitext(title, wikitext)
    if len(text) < max(min_chars, 1):
        stats.skipped["too short"] += 1
        return None
    return text
