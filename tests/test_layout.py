"""scripts/ holds what users run, tools/ what only contributors run. The arrow points one way:
tools/ may use scripts/ and the library, but nothing outside tools/ and tests/ imports a tool,
puts tools/ on sys.path, or runs a file in tools/ (a user's command must not need a contributor's
tool). Fast: parses source, runs nothing."""
import ast
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# every source file outside tools/ and tests/ (the library, configs, data, kernels, scripts, CI)
SOURCES = ["*.py", "config/*.py", "data/*.py", "kernels/*.py", "scripts/*.py", "scripts/*.sh", ".ci/run"]


def tool_modules(root):
    return {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(root, "tools", "*.py"))} | {"tools"}


def docstrings(tree):
    """The ids of the string constants that are docstrings (they may name a tool for a reader)."""
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def uses_of_tools(root):
    tools, problems = tool_modules(root), []
    for name in sorted({os.path.relpath(p, root) for s in SOURCES for p in glob.glob(os.path.join(root, s))}):
        text = open(os.path.join(root, name), encoding="utf-8").read()
        if not name.endswith(".py"):   # a shell script: any line that is not a comment
            problems += [f"{name}:{i}: runs a tool: {line.strip()}" for i, line in enumerate(text.splitlines(), 1)
                         if re.search(r"(?<![\w.-])tools/", line.split("#")[0])]
            continue
        tree = ast.parse(text, name)
        skip = docstrings(tree)
        for node in sorted(ast.walk(tree), key=lambda n: getattr(n, "lineno", 0)):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names if a.name.split(".")[0] in tools]
            elif isinstance(node, ast.ImportFrom):
                found = [node.module] if node.module and node.module.split(".")[0] in tools else []
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                found = [node.value] if re.search(r"(?<![\w.-])tools/|^tools$", node.value) else []
            else:
                continue
            problems += [f"{name}:{node.lineno}: uses tools/: {f!r}" for f in found]
    return problems


def test_nothing_outside_tools_and_tests_uses_a_tool():
    assert {"mutation_report", "kernel_resources", "mutate_kernels"} <= tool_modules(ROOT)
    assert uses_of_tools(ROOT) == []


def test_planted_uses_are_found(tmp_path):
    for folder in ("tools", "scripts"):
        (tmp_path / folder).mkdir()
    (tmp_path / "tools" / "helper.py").write_text("import report\n")          # a tool may use scripts/
    # a docstring may name a tool for its reader
    (tmp_path / "scripts" / "report.py").write_text('"""Counted by tools/helper.py."""\nimport os\n')
    (tmp_path / "scripts" / "a.py").write_text("import helper\nfrom helper import x\n")
    (tmp_path / "scripts" / "b.py").write_text('import os, sys\nsys.path.insert(0, os.path.join("r", "tools"))\n'
                                               'cmd = ["python", "tools/helper.py"]   # run as a subprocess\n')
    (tmp_path / "scripts" / "c.sh").write_text("# see tools/helper.py\npython tools/helper.py\n")
    (tmp_path / "model.py").write_text("import tools.helper\n")
    found = uses_of_tools(str(tmp_path))
    assert [f.split(":")[:2] for f in found] == [["model.py", "1"], ["scripts/a.py", "1"], ["scripts/a.py", "2"],
                                                 ["scripts/b.py", "2"], ["scripts/b.py", "3"], ["scripts/c.sh", "2"]]
