"""README.md and docs/*.md: every relative link reaches a file (and its #anchor a heading there),
and every `python X.py` / `bash X.sh` / `torchrun ... X.py` they name is a file in the repository.
The files a user reads (pages, configs, scripts and tools, requirements, the library) carry no
internal wording, name run directories one way (out/<name>-<run>: docs/training.md), and every
README section a file points to (README, "Section") is a heading there.
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


# ---------------------------------------------------------------- what a user reads, beyond the pages

USER_FILES = ["README.md", "docs/*.md", "config/*.py", "scripts/*", "tools/*", "requirements*.txt", "*.py",
              "kernels/*.py", "data/*.py", "CITATION.cff"]


def user_files(root=ROOT):
    return sorted({os.path.relpath(p, root) for pattern in USER_FILES for p in glob.glob(os.path.join(root, pattern))
                   if os.path.isfile(p)})


def lines_of(files, root):
    for name in files:
        with open(os.path.join(root, name), encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                yield name, number, line


# Words about how this project is run, not about the code: they mean nothing to a user.
INTERNAL = [
    (re.compile(r"\bissues?\s*#\d+|\bissue\s+\d+", re.I), "an issue number"),   # not "an SM issues 128"
    (re.compile(r"\.\./shared\b|\bshared/spec\b|(?<![\w.~])/work/|(?<!\w)\.library\b"),
     "a path outside the repository"),
    (re.compile(r"\blent\b|\bdevice (?:time|budget)\b", re.I), "how our own GPU checks are scheduled"),
    (re.compile(r"\b(?:next|this|our|later|each) sessions?\b|\bthe lead\b", re.I), "our own sessions"),
]


def internal_wording(root=ROOT):
    return [f"{name}:{number}: {m.group(0)!r} ({what})" for name, number, line in lines_of(user_files(root), root)
            for pattern, what in INTERNAL for m in pattern.finditer(line)]


def test_no_internal_wording_in_what_users_read():
    assert internal_wording() == []


# A pointer to a README section is written one way, README, "Section", and names a heading of README.md;
# a path with an anchor (README.md#x, docs/y.md#x) names a heading of that file.
POINTER = re.compile(r'\bREADME(?![.\w"])([^\w"\n]{1,4})"([^"\n]+)"')
ANCHORED = re.compile(r"\b(README\.md|docs/[\w-]+\.md)#([\w-]+)")


def headings(text):
    return {line.lstrip("#").strip() for line in FENCE.sub("", text).splitlines() if line.startswith("#")}


def stale_pointers(root=ROOT, files=None):
    if files is None:   # the tests' own text too, but not this file (it holds planted examples)
        files = user_files(root) + [os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "tests", "*.py"))
                                    if os.path.basename(p) != "test_docs.py"] + [".ci/run"]
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    problems = []
    for name, number, line in lines_of([f for f in files if os.path.isfile(os.path.join(root, f))], root):
        for sep, section in POINTER.findall(line):
            if sep != ", ":
                problems.append(f'{name}:{number}: write README, "{section}" (one phrasing for a README section)')
            elif section not in headings(readme):
                problems.append(f'{name}:{number}: README has no section "{section}"')
        for page, anchor in ANCHORED.findall(line):
            path = os.path.join(root, page)
            if not os.path.isfile(path) or anchor not in anchors(open(path, encoding="utf-8").read()):
                problems.append(f"{name}:{number}: no heading #{anchor} in {page}")
    return problems


def test_pointers_to_sections_name_headings():
    assert stale_pointers() == []


# Run directories: out/<name>-<run>, <name> the setup (a config's out_dir, or a reproduce script's
# name=), <run> an attention type with an optional -suffix (docs/training.md).
RUN_DIR = re.compile(r"(?<![\w./$-])out/([^\s`'\"()\[\],;:|]+)")


def setup_names(root=ROOT):
    from_configs = {f: re.search(r'^out_dir = "out/(.+)-\{attention\}"', open(f, encoding="utf-8").read(), re.M)
                    for f in glob.glob(os.path.join(root, "config", "*.py"))}
    small = re.findall(r"\bname=([\w.-]+);", open(os.path.join(root, "scripts", "reproduce_small.sh")).read())
    return {m.group(1) for m in from_configs.values() if m} | set(small)


def misnamed_run_dirs(files, names, types, root=ROOT):
    scheme = re.compile(rf"({'|'.join(map(re.escape, names))})-({'|'.join(map(re.escape, types))})(-[\w.]+)?")
    return [f"{name}:{number}: out/{path} is not out/<name>-<run> (names: {', '.join(sorted(names))})"
            for name, number, line in lines_of(files, root) for path in RUN_DIR.findall(line)
            if not re.search(r"[$<{*]", path) and not scheme.fullmatch(path.split("/")[0])]


def test_run_directories_have_one_naming_scheme():
    from attention import ATTENTION_TYPES
    from configurator import load_config
    names = setup_names()
    assert {"demo", "small", "small-cpu", "paper_124m"} <= names
    for path in sorted(glob.glob(os.path.join(ROOT, "config", "*.py"))):
        out_dir = load_config([os.path.relpath(path, ROOT)]).out_dir   # an included config's out_dir must not leak
        config = os.path.basename(path)[:-3]
        # the paper configs by their file name: what scripts/reproduce_paper.sh names their runs and results
        expected = {"demo_cpu": "demo", "small_gpu": "small"}.get(config, config)
        assert out_dir == f"out/{expected}-{{attention}}", path
    assert misnamed_run_dirs(user_files(), names, ATTENTION_TYPES) == []


def test_planted_wording_pointers_and_run_dirs_are_found(tmp_path):
    for folder in ("docs", "scripts", "config"):
        (tmp_path / folder).mkdir()
    (tmp_path / "README.md").write_text("# T\n\n## Installing\n\nas in issue 22, and Issue #3; an SM issues 128.\n"
                                        "`python train.py --out_dir=out/demo-lssar`, out/paper_124m-lssar-p3/ckpt.pt;\n"
                                        "not out/gpt2-124M-fineweb-10B-lssar nor out/demo-nosuchtype; $out/$name-x\n")
    (tmp_path / "docs" / "a.md").write_text("# A\n\nCopied from ../shared/spec/paper.md.\n")
    (tmp_path / "scripts" / "x.py").write_text('"""Run on the lent machines; an interactive session is fine."""\n'
                                               "# torch.library.custom_op is not a path\n")
    (tmp_path / "scripts" / "reproduce_small.sh").write_text("x) name=small-cpu; ;;\n")
    (tmp_path / "config" / "c.py").write_text('data_dir = "/work/main/data"\n')
    (tmp_path / "requirements.txt").write_text('# see README, "Installing"; README ("Installing"); README, "Install"\n'
                                               '# ["README.md", "config.json"]; README.md#installing; README.md#nope\n')
    found = internal_wording(str(tmp_path))
    assert [p.split(":")[0] for p in found] == ["README.md", "README.md", "config/c.py", "docs/a.md", "scripts/x.py"]
    pointers = stale_pointers(str(tmp_path), ["requirements.txt"])
    assert len(pointers) == 3 and "one phrasing" in pointers[0] and 'no section "Install"' in pointers[1]
    assert "#nope" in pointers[2]
    bad = misnamed_run_dirs(["README.md"], {"demo", "paper_124m"}, ("lssa", "lssar"), str(tmp_path))
    assert len(bad) == 2 and "gpt2-124M" in bad[0] and "nosuchtype" in bad[1]
