"""`ulmfit download-wiki LANG`: fetch a Wikipedia's `pages-articles-multistream.xml.bz2` and its
`multistream-index.txt.bz2` from the Wikimedia dumps site (or a mirror), checked against the dump's published
SHA-1 checksums (`<wiki>-<date>-sha1sums.txt`), resumed with HTTP Range after an interruption.

A file is downloaded to `.<name>.part` beside its final name and renamed only once its checksum matches: a
folder never holds a half or a wrong dump under the real name. `--date latest` takes the newest dated dump
whose checksum file lists both files (a dump still running does not). The standard library's `urllib` does
the HTTP: one GET per file with a Range header, no dependency for a command most users run once.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

from ulmfit_cli.console import info, progress
from ulmfit_cli.errors import UlmfitError

MIRROR = "https://dumps.wikimedia.org"
MIRROR_ENV = "ULMFIT_WIKI_MIRROR"  # another mirror (tests: a local server)
BLOCK = 1 << 20
TIMEOUT_S = 60
RETRIES = 3         # resumed attempts per file within one run
LATEST_TRIES = 5    # dated dumps tried for --date latest, newest first
# `ulmfit prepare` on Wikipedia XML, measured (docs/benchmarks.md, bench/prepare_speed.py, 2-core machine):
# MB of XML/s per worker process on text the tokenizer has not seen (2.48; a dump that repeats it: 4.2),
# and XML bytes per byte of bz2 (the sample: 3.6; enwiki: about 4)
XML_MB_S_PER_WORKER = 2.5
XML_PER_BZ2 = 4.0


def files_of(wiki: str, date: str) -> tuple[str, str]:
    return (f"{wiki}-{date}-pages-articles-multistream.xml.bz2",
            f"{wiki}-{date}-pages-articles-multistream-index.txt.bz2")


def download_wiki(lang: str, date: str = "latest", output: Path | None = None, mirror: str | None = None,
                  retries: int = RETRIES) -> Path:
    """Download and verify `lang`'s dump and index into `output` (default data/wikipedia/<wiki>-<date>);
    returns the dump's path."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,20}", lang):
        raise UlmfitError(f"LANG: {lang!r} is not a Wikipedia language code (en, de, ja, zh-yue, ...)")
    if date != "latest" and not re.fullmatch(r"\d{8}", date):
        raise UlmfitError(f"--date: expected latest or a dump's date as YYYYMMDD, got {date!r}")
    mirror = (mirror or os.environ.get(MIRROR_ENV) or MIRROR).rstrip("/")
    wiki = f"{lang.replace('-', '_')}wiki"
    hint = Path(output) if output else Path("data") / "wikipedia" / f"{wiki}-{date}"
    date, sums = _dated(mirror, wiki, date, hint)
    output = Path(output) if output else Path("data") / "wikipedia" / f"{wiki}-{date}"
    names = files_of(wiki, date)
    urls = [f"{mirror}/{wiki}/{date}/{n}" for n in names]
    sizes = [_size(u, output) for u in urls]
    workers = os.cpu_count() or 1
    xml_mb = sizes[0] * XML_PER_BZ2 / 1e6
    info(f"{wiki} {date}: {_bytes(sizes[0])} dump + {_bytes(sizes[1])} index into {output}; `ulmfit "
         f"prepare` on it: about {_hours(xml_mb / (XML_MB_S_PER_WORKER * workers))} with this machine's "
         f"{workers} cores ({XML_MB_S_PER_WORKER} MB of XML/s per worker, measured; ~{_bytes(xml_mb * 1e6)} "
         f"of XML)")
    output.mkdir(parents=True, exist_ok=True)
    for name, url, size in zip(names, urls, sizes):
        _fetch(url, output / name, size, sums[name], retries)
    info(f"ready: ulmfit pretrain --config ... --set data.source={output / names[0]} "
         f"(the index beside it lets every core read the dump)")
    return output / names[0]


def _bytes(n: float) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _open(url: str, folder: Path, headers: dict | None = None, method: str = "GET"):
    """A response, or a one-screen error naming the URL and what to do by hand."""
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}, method=method),
                                      timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise _NotFound(url) from None
        raise _refused(url, folder, f"the site answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, http.client.HTTPException) as e:
        raise _refused(url, folder, f"cannot reach it ({getattr(e, 'reason', e)})") from None


class _NotFound(UlmfitError):
    def __init__(self, url: str):
        super().__init__(f"{url}: not found (HTTP 404)")
        self.url = url


def _refused(url: str, folder: Path, why: str) -> UlmfitError:
    return UlmfitError(f"{url}: {why}.\nOffline, or the site refuses: download the dump and its index by "
                       f"hand (from {MIRROR}/<lang>wiki/<date>/: <lang>wiki-<date>-pages-articles-multistream"
                       f".xml.bz2 and ...-multistream-index.txt.bz2) into {folder}, then run `ulmfit prepare "
                       f"--set data.source={folder}/<the .xml.bz2>`.")


def _dated(mirror: str, wiki: str, date: str, folder: Path) -> tuple[str, dict[str, str]]:
    """The dump's date and the SHA-1 of its files, from its checksum file (latest: the newest that lists
    both files)."""
    if date == "latest":
        try:
            listing = _open(f"{mirror}/{wiki}/", folder).read().decode("utf-8", "replace")
        except _NotFound as e:
            raise UlmfitError(f"{e.url}: no dumps of {wiki} (HTTP 404); is the language code right (en, de, "
                              f"ja, ...)?") from None
        dates = sorted(set(re.findall(r'href="(\d{8})/?"', listing)), reverse=True)[:LATEST_TRIES]
        if not dates:
            raise UlmfitError(f"{mirror}/{wiki}/: lists no dated dumps")
    else:
        dates = [date]
    for d in dates:
        url = f"{mirror}/{wiki}/{d}/{wiki}-{d}-sha1sums.txt"
        try:
            text = _open(url, folder).read().decode("utf-8", "replace")
        except _NotFound:
            if date != "latest":
                raise UlmfitError(f"{url}: not found (HTTP 404): no {wiki} dump of {d}, or {wiki} is not a "
                                  f"Wikipedia (is the language code right?)") from None
            continue
        sums = {name: sha for sha, name in re.findall(r"^([0-9a-f]{40})\s+\*?(\S+)$", text, re.M)}
        if all(n in sums for n in files_of(wiki, d)):
            return d, sums
        if date != "latest":
            raise UlmfitError(f"{url} lists no checksum for {' or '.join(files_of(wiki, d))}: that dump is "
                              f"not finished, or has no multistream files")
    raise UlmfitError(f"{mirror}/{wiki}/: none of the {len(dates)} newest dumps ({', '.join(dates)}) is "
                      f"finished with its multistream files; give --date")


def _size(url: str, folder: Path) -> int:
    try:
        with _open(url, folder, method="HEAD") as r:
            return int(r.headers.get("Content-Length") or 0)
    except _NotFound:
        raise UlmfitError(f"{url}: not found (HTTP 404), though the dump's checksum file lists it") from None


def _fetch(url: str, path: Path, size: int, sha1: str, retries: int) -> None:
    """`url` into `path` through `.name.part`, resumed with Range where a part is there, renamed once its
    SHA-1 is `sha1`."""
    if path.is_file() and _sha1(path) == sha1:
        info(f"{path.name}: already here, checksum verified")
        return
    part = path.with_name(f".{path.name}.part")
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.is_file() else 0
        if size and have >= size:
            break
        try:
            _get(url, part, have, size, path.parent)
            break
        except _Interrupted as e:
            if attempt == retries:
                raise UlmfitError(f"{url}: the transfer broke off at {e.at / 1e6:,.1f} of {size / 1e6:,.1f} "
                                  f"MB ({e.why}); run the same command again to resume from there ({part})"
                                  ) from None
            info(f"{path.name}: the transfer broke off at {e.at / 1e6:,.1f} MB ({e.why}); resuming")
    got = _sha1(part)
    if got != sha1:
        part.unlink()
        raise UlmfitError(f"{url}: checksum mismatch (SHA-1 {got}, the dump's sha1sums.txt says {sha1}); "
                          f"the download was removed and nothing was written under {path.name}: run the "
                          f"command again")
    os.replace(part, path)
    info(f"{path.name}: checksum verified")


class _Interrupted(Exception):
    def __init__(self, at: int, why: str):
        super().__init__(why)
        self.at, self.why = at, why


def _get(url: str, part: Path, have: int, size: int, folder: Path) -> None:
    headers = {"Range": f"bytes={have}-"} if have else {}
    response = _open(url, folder, headers)
    if have and response.status != 206:  # the server ignores Range: start again
        have = 0
    bar = progress(total=size or None, initial=have, desc=part.name[1:-5], unit="B", unit_scale=True,
                   unit_divisor=1024)
    done = have
    try:
        with response, open(part, "ab" if have else "wb") as f:
            while True:
                try:
                    block = response.read(BLOCK)
                except http.client.IncompleteRead as e:  # what came before the break is kept
                    f.write(e.partial)
                    raise _Interrupted(done + len(e.partial), "the connection closed early") from None
                except (ConnectionError, socket.timeout, OSError) as e:
                    raise _Interrupted(done, type(e).__name__) from None
                if not block:
                    break
                f.write(block)
                done += len(block)
                bar.update(len(block))
    finally:
        bar.close()
    if size and done < size:
        raise _Interrupted(done, "the connection closed early")


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(BLOCK * 8):
            h.update(block)
    return h.hexdigest()
