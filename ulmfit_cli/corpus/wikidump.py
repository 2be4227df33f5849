"""Read pages out of a MediaWiki `pages-articles` XML dump (.xml, .xml.bz2, multistream) and
clean their markup.

`chunks` cuts a dump into pieces of whole pages that worker processes read on their own
(`pages_of`), so that the parent process only schedules: a multistream dump (what Wikimedia
publishes: bz2 streams of 100 pages, listed by offset in its `*-multistream-index.txt.bz2`) is
handed out as byte ranges of whole streams, which the workers decompress and parse; the offsets
come from the index, or, without one, from the streams' own headers found in the file. A
single-stream `.bz2` or a plain `.xml` is decompressed in the parent and cut at page ends. Every
way yields the same pages in the same order as `iter_pages`, which parses the XML incrementally
in one process. Both keep namespace-0 pages that are not redirects. `clean_page` removes the
markup with wikiextractor's cleaner (templates, tables, refs, link targets, bold/italic quotes,
comments) and filters disambiguation pages, lists and stubs.
"""
from __future__ import annotations

import bz2
import io
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
    sp_sample: dict | None = None  # what SentencePiece was trained on (chars, lines, the trainer's sample)
    shared_words: int = 0     # words a worker took from the others rather than learn them (`prepare._take_words`)


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
        broken(path, f"the XML is malformed or truncated ({e})", stats, keep_truncated)
    except (OSError, EOFError) as e:
        stats.bytes_read = raw.tell()
        broken(path, f"cannot read it ({e}); a truncated or corrupted download?", stats, keep_truncated)
    finally:
        stream.close()
        raw.close()


def broken(path: Path, why: str, stats: DumpStats, keep_truncated: bool) -> None:
    """A dump that breaks off: an error naming the file, the pages read and the byte, or (keep_truncated)
    a warning, the complete pages before it kept."""
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


# ---------------------------------------------------------------- reading on every core
# a bzip2 stream starts byte-aligned with "BZh" + its block size + the first block's magic (pi's digits)
_STREAM = re.compile(rb"BZh[1-9]\x31\x41\x59\x26\x53\x59")
CHUNK_BYTES = 1 << 18   # compressed bytes per multistream job (about 1 MB of XML)
XML_BYTES = 1 << 20     # XML bytes per job of a single-stream dump
_HEAD = re.compile(rb"<(?![?!])([A-Za-z_][\w:.-]*)")


class BrokenChunk(Exception):
    """Where `chunks` finds the file cut or damaged: the reason, for `prepare` to name the file and byte."""


def index_of(path: Path) -> Path | None:
    """The `*-multistream-index*.txt.bz2` Wikimedia publishes beside a multistream dump (or part), if it
    is there."""
    name = re.sub(r"multistream(\d*)\.xml", r"multistream-index\1.txt", path.name)
    index = path.with_name(name)
    return index if name != path.name and index.is_file() else None


def is_index(path: Path) -> bool:
    return "multistream-index" in path.name


def stream_starts(path: Path, index: Path | None = None) -> list[int]:
    """Byte offsets where the file's bz2 streams start: from the index's `offset:page_id:title` lines,
    or by finding each stream's header in the file."""
    if index is not None:
        starts = {0}
        with bz2.open(index, "rb") as f:
            for line in f:
                head = line.split(b":", 1)[0]
                if head.isdigit():
                    starts.add(int(head))
        return sorted(starts)
    starts, block, pos = [], 8 << 20, 0
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(block):
            buf = tail + chunk
            base = pos - len(tail)
            starts += [base + m.start() for m in _STREAM.finditer(buf) if base + m.start() not in starts[-1:]]
            tail, pos = buf[-9:], pos + len(chunk)
    return starts


def chunks(path: Path, stats: DumpStats) -> Iterator:
    """Jobs of whole pages for `pages_of`: (path, start, end) byte ranges of a multistream dump's streams,
    or XML bytes (single-stream `.bz2`, plain `.xml`); where the file turns out cut or damaged, a
    `BrokenChunk` in the place of the job (the pages before it are whole). `stats.bytes_read`: the file
    position reached."""
    with open(path, "rb") as f:
        compressed = f.read(3) == b"BZh"
    starts = stream_starts(path, index_of(path)) if compressed else [0]
    if len(starts) > 1:
        size = path.stat().st_size
        begin = starts[0]
        for a in starts[1:] + [size]:
            if a - begin >= CHUNK_BYTES or a == size:
                stats.bytes_read = a
                yield path, begin, a
                begin = a
        if not _ends(path, starts[-1]):  # cut at a stream's end: no worker would see it
            yield BrokenChunk("the XML is truncated (its last stream ends without </mediawiki>)")
        return
    raw = open(path, "rb")
    stream = bz2.BZ2File(raw) if compressed else raw
    buf = b""
    try:
        while block := stream.read(XML_BYTES):
            buf += block
            cut = buf.rfind(b"</page>")
            if cut >= 0:
                cut += len(b"</page>")
                stats.bytes_read = raw.tell()
                yield buf[:cut]
                buf = buf[cut:]
        stats.bytes_read = raw.tell()
    except (OSError, EOFError) as e:
        stats.bytes_read = raw.tell()
        yield BrokenChunk(f"cannot read it ({e}); a truncated or corrupted download?")
        return
    finally:
        stream.close()
        raw.close()
    if b"<page" in buf or b"</mediawiki>" not in buf:
        yield BrokenChunk("the XML is malformed or truncated (it ends inside a page or without </mediawiki>)")
    elif buf.strip():
        yield buf


def _ends(path: Path, start: int) -> bool:
    """Whether the stream at `start` (the last) holds the export's end; a stream that cannot be read: True
    here (the worker that reads it says what is wrong)."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    try:
        return b"</mediawiki>" in bz2.decompress(data)
    except (OSError, EOFError, ValueError):
        return True


def check_head(path: Path, lang_warning: bool = False) -> None:
    """The file is a MediaWiki export (a bzip2 file if named so; its root element), checked before `chunks`
    reads it; warn about a non-English dump read with the English rules."""
    with open(path, "rb") as f:
        head = f.read(1 << 18)
    if path.name.endswith(".bz2") and not head.startswith(b"BZh"):
        raise UlmfitError(f"{path}: not a bzip2 file (it does not start with 'BZh'); a damaged download, "
                          f"or a file named .bz2 that is not compressed?")
    if head.startswith(b"BZh"):
        try:  # what the first stream's beginning gives (a cut file: less; the token pass says it is cut)
            head = bz2.BZ2Decompressor().decompress(head, max_length=1 << 16)
        except OSError as e:
            raise UlmfitError(f"{path}: cannot read it ({e}); a truncated or corrupted download?") from None
    m = _HEAD.search(head)
    tag = _local(m.group(1).decode("utf-8", "replace")) if m else "(none)"
    if tag != "mediawiki":
        raise UlmfitError(f"{path}: not a MediaWiki XML export (root element <{tag}>, expected <mediawiki>)")
    lang = re.search(rb'xml:lang="([^"]+)"', head)
    lang = lang.group(1).decode() if lang else "en"
    if lang_warning and lang != "en":
        info(f"warning: {path.name} is a dump with xml:lang=\"{lang}\", tokenized with the English (spaCy "
             f"'en') rules; consider data.tokenizer: sentencepiece")


def pages_of(job) -> tuple[list[tuple[str, str]], DumpStats, str | None]:
    """The (title, wikitext) pages of a `chunks` job, read where it runs (a worker), with its page count
    and skips, and why it breaks off (None: it does not; the whole pages before the break are given, and
    `bytes_read` is the file position of the break)."""
    stats, why = DumpStats(), None
    if isinstance(job, tuple):
        path, start, end = job
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        parts, stats.bytes_read = [], start
        while data:  # stream by stream: the streams before a damaged one are kept
            unzip = bz2.BZ2Decompressor()
            try:
                parts.append(unzip.decompress(data))
            except OSError as e:
                why = f"cannot read it ({e}); a truncated or corrupted download?"
                break
            if not unzip.eof:
                why = "cannot read it (a bz2 stream ends early); a truncated or corrupted download?"
                parts.pop()
                break
            stats.bytes_read += len(data) - len(unzip.unused_data)
            data = unzip.unused_data
        job = b"".join(parts)
    first, last = job.find(b"<page>"), job.rfind(b"</page>")
    if first < 0 or last < 0:
        return [], stats, why
    if why is None and b"<page" in job[last:]:
        why = "the XML is malformed or truncated (a page without its end)"
    pages = []
    try:
        for _, elem in ET.iterparse(io.BytesIO(b"<pages>" + job[first:last + 7] + b"</pages>")):
            if _local(elem.tag) == "page":
                stats.pages += 1
                page = _page(elem, stats)
                elem.clear()
                if page:
                    pages.append(page)
    except ET.ParseError as e:
        why = f"the XML is malformed or truncated ({e})"
    return pages, stats, why


def to_multistream(xml: bytes, out: Path, pages_per_stream: int = 100) -> Path:
    """Write a dump's XML in Wikimedia's multistream layout: the header as one bz2 stream, then streams of
    `pages_per_stream` pages, then the closing tag; and beside it the `...-multistream-index.txt.bz2` of
    `offset:page_id:title` lines. Returns the index's path (tests and benchmarks build real-format dumps
    with it)."""
    starts = [m.start() for m in re.finditer(rb"<page>", xml)]
    end = xml.rfind(b"</page>") + len(b"</page>")
    cuts = [0] + starts[::pages_per_stream] + [end, len(xml)]
    lines, offset = [], 0
    with open(out, "wb") as f:
        for a, b in zip(cuts[:-1], cuts[1:]):
            for page in re.finditer(rb"<page>.*?<title>(.*?)</title>.*?<id>(\d+)</id>", xml[a:b], re.S):
                lines.append(b"%d:%s:%s" % (offset, page.group(2), page.group(1)))
            data = bz2.compress(xml[a:b], 9)
            f.write(data)
            offset += len(data)
    index = out.with_name(re.sub(r"multistream(\d*)\.xml", r"multistream-index\1.txt", out.name))
    if index == out:
        raise ValueError(f"{out.name}: a multistream dump's name holds 'multistream.xml'")
    index.write_bytes(bz2.compress(b"\n".join(lines) + b"\n", 9))
    return index


def clean_pages(pages: Iterable[tuple[str, str]], skipped: dict, min_chars: int = 0) -> Iterator[str]:
    """Clean text of the kept pages; the others are counted in `skipped` by reason."""
    for title, wikitext in pages:
        text, reason = clean_page(title, wikitext, min_chars)
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
        else:
            yield text
