"""Stream pages out of a MediaWiki `pages-articles` XML dump (.xml, .xml.bz2, multistream) and
clean their markup.

`iter_pages` parses the XML incrementally (a `.bz2` is decompressed as a stream) and frees
each page once read, so memory does not grow with the dump; it keeps namespace-0 pages that
are not redirects. `clean_page` removes the markup with wikiextractor's cleaner (templates,
tables, refs, link targets, bold/italic quotes, comments) and filters disambiguation pages,
lists and stubs; it is what `prepare`'s worker processes run.
"""
from __future__ import annotations

import bz2
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ulmfit_cli.console import info
from ulmfit_cli.errors import UlmfitError

logging.getLogger("wikiextractor").setLevel(logging.ERROR)  # it warns per article about templates
from wikiextractor.extract import Extractor  # noqa: E402

_FORMULA = re.compile(r"\b(?:formula|codice)_\d+\b")
_DISAMBIG = re.compile(r"\{\{\s*(?:disambig|disambiguation|dab|hndis|geodis|surname|given name)"
                       r"\b[^}]*\}\}", re.I)
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


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
    bytes_read: int = 0       # position in the (compressed) file, for progress
    truncated: bool = False
    skipped: dict = field(default_factory=lambda: {"namespace": 0, "redirect": 0})


def clean_wikitext(title: str, wikitext: str) -> str:
    """Article wikitext -> plain paragraphs joined by newlines."""
    paragraphs = Extractor(0, 0, "", title, []).clean_text(wikitext, expand_templates=False, html_safe=False)
    text = "\n".join(p.strip() for p in paragraphs if p.strip())
    return _FORMULA.sub("", text)


def clean_page(title: str, wikitext: str, min_chars: int = 0) -> tuple[str, str | None]:
    """(clean text, None), or ("", reason) for a page that is not kept."""
    if title.endswith("(disambiguation)") or title.startswith("List of") or _DISAMBIG.search(wikitext):
        return "", "disambiguation/list"
    text = clean_wikitext(title, wikitext)
    if len(text) < max(min_chars, 1):
        return "", "too short"
    return text, None


def iter_pages(path: Path, stats: DumpStats | None = None, lang_warning: bool = False,
               keep_truncated: bool = False) -> Iterator[tuple[str, str]]:
    """(title, wikitext) of each namespace-0 page that is not a redirect, in dump order."""
    stats = stats if stats is not None else DumpStats()
    raw = open(path, "rb")
    compressed = raw.read(3) == b"BZh"
    raw.seek(0)
    if path.name.endswith(".bz2") and not compressed:
        raw.close()
        raise UlmfitError(f"{path}: not a bzip2 file (it does not start with 'BZh'); a damaged download, "
                          f"or a file named .bz2 that is not compressed?")
    stream = bz2.BZ2File(raw) if compressed else raw
    try:
        root = None
        for event, elem in ET.iterparse(stream, events=("start", "end")):
            tag = _local(elem.tag)
            if root is None:
                if tag != "mediawiki":
                    raise UlmfitError(f"{path}: not a MediaWiki XML export (root element <{tag}>, "
                                      f"expected <mediawiki>)")
                root = elem
                lang = elem.get(_XML_LANG, "en")
                if lang_warning and lang != "en":
                    info(f"warning: {path.name} is a dump with xml:lang=\"{lang}\", tokenized with the "
                         f"English (spaCy 'en') rules; consider data.tokenizer: sentencepiece")
                continue
            if event != "end" or tag != "page":
                continue
            stats.pages += 1
            stats.bytes_read = raw.tell()
            page = _page(elem, stats)
            root.clear()  # drop finished pages: constant memory
            if page:
                yield page
    except ET.ParseError as e:
        stats.bytes_read = raw.tell()
        _broken(path, f"the XML is malformed or truncated ({e})", stats, keep_truncated)
    except (OSError, EOFError) as e:
        stats.bytes_read = raw.tell()
        _broken(path, f"cannot read it ({e}); a truncated or corrupted download?", stats, keep_truncated)
    finally:
        stream.close()
        raw.close()


def _broken(path: Path, why: str, stats: DumpStats, keep_truncated: bool) -> None:
    where = f"it broke after {stats.pages} complete pages, by byte {stats.bytes_read:,} of the file"
    if not keep_truncated:
        raise UlmfitError(f"{path}: {why}; {where}. Set data.keep_truncated=true to keep the complete "
                          f"pages before that point") from None
    stats.truncated = True
    info(f"warning: {path}: {why}; {where}; keeping the {stats.pages} complete pages before it")


def _page(page: ET.Element, stats: DumpStats) -> tuple[str, str] | None:
    fields = {_local(c.tag): c for c in page}
    if fields.get("ns") is not None and fields["ns"].text != "0":
        stats.skipped["namespace"] += 1
        return None
    revision = fields.get("revision")
    text_el = None if revision is None else next((c for c in revision if _local(c.tag) == "text"), None)
    wikitext = (text_el.text or "") if text_el is not None else ""
    if "redirect" in fields or wikitext.lstrip().lower().startswith("#redirect"):
        stats.skipped["redirect"] += 1
        return None
    return (fields["title"].text or "") if "title" in fields else "", wikitext


def clean_pages(pages: Iterable[tuple[str, str]], skipped: dict, min_chars: int = 0) -> Iterator[str]:
    """Clean text of the kept pages; the others are counted in `skipped` by reason."""
    for title, wikitext in pages:
        text, reason = clean_page(title, wikitext, min_chars)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            yield text
