"""README.md and docs/*.md: every relative link reaches a file (and its #anchor a heading there),
and every `python X.py` / `bash X.sh` / `torchrun ... X.py` they name is a file in the repository.
Fast: reads text only, runs nothing."""
import glob
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
INLINE = re.compile(r"`([^`\n]+)`")
LAUNCHER = re.compile(r"(?:^|[\s;&|(])(python3?|bash|torchrun)\s+(.*)")


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text):
    seen, out = {}, set()
    for line in FENCE.sub("", text).splitlines():
        if line.startswith("#"):
            s = slug(line.lstrip("#"))
            out.add(s if s not in seen else f"{s}-{seen[s]}")  # a repeated heading gets -1, -2, ...
            seen[s] = seen.get(s, 0) + 1
    return out


def broken_links(page, root=ROOT):
    path = os.path.join(root, page)
    text = open(path, encoding="utf-8").read()
    problems = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):   # http:, https:, mailto: are not ours to check
            continue
        file, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(dest):
            problems.append(f"{page}: link {target!r}: no file {os.path.relpath(dest, root)}")
        elif anchor and dest.endswith(".md") and anchor not in anchors(open(dest, encoding="utf-8").read()):
            problems.append(f"{page}: link {target!r}: no heading #{anchor} in {os.path.relpath(dest, root)}")
    return problems


def commands(text):
    """Every command line in a fenced block (backslash continuations joined) or inline code."""
    lines = []
    for block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()[1:-1]
    lines += INLINE.findall(FENCE.sub("", text))
    return lines


def missing_scripts(page, root=ROOT):
    problems = []
    for line in commands(open(os.path.join(root, page), encoding="utf-8").read()):
        for launcher, rest in LAUNCHER.findall(line):
            try:
                words = shlex.split(rest, comments=True)
            except ValueError:
                words = rest.split()
            if launcher.startswith("python") and words[:1] in (["-m"], ["-c"]):
                continue   # a module or inline code, not a file
            if launcher == "torchrun":   # its own options first, then the script
                words = [w for w in words if not w.startswith("-")]
            script = words[0] if words else ""
            if not script.endswith((".py", ".sh")) or not os.path.isfile(os.path.join(root, script)):
                problems.append(f"{page}: {launcher} {rest.strip()!r}: no script {script!r} in the repository")
    return problems


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", PAGES)
def test_commands_name_existing_scripts(page):
    assert missing_scripts(page) == []


def test_the_pages_are_checked():
    assert {"README.md", "docs/training.md", "docs/evaluation.md", "docs/troubleshooting.md"} <= set(PAGES)


def test_slugs_as_github_makes_them():
    assert slug("The paper's numbers and ours") == "the-papers-numbers-and-ours"
    assert slug("Resuming an interrupted `prepare.py`") == "resuming-an-interrupted-preparepy"
    assert slug("Checking a GPU in one command") == "checking-a-gpu-in-one-command"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}


def test_planted_breaks_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "run.py").write_text("")
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Real heading\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md) [ok](docs/a.md#real-heading) [web](https://example.com/x.md)\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#no-such-heading)\n"
        "`python run.py --x` and `python missing.py`\n"
        "```\ntorchrun --standalone --nproc_per_node=2 \\\n    run.py\nbash nothere.sh   # comment\n"
        "python -m pytest\n```\n")
    links = broken_links("README.md", str(tmp_path))
    assert len(links) == 2 and "docs/b.md" in links[0] and "#no-such-heading" in links[1]
    scripts = missing_scripts("README.md", str(tmp_path))
    assert len(scripts) == 2 and "nothere.sh" in scripts[0] and "missing.py" in scripts[1]
