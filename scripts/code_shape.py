#!/usr/bin/env python3
"""Checks the shape of the code that CI holds the project to:

1. no import circle between the files of one crate (`crate::`, `super::`
   and `self::` paths in `use` lines and inline paths, resolved to the
   module file they name);
2. no money-path function longer than 70 lines (every `fn` in the files
   listed in MONEY_PATH);
3. no `macro_rules!` body longer than 300 lines.

Usage: python3 scripts/code_shape.py [repo root]. Prints what it found and
exits 1 on any violation. Written for this repository's layout; it reads
Rust by regular expressions and brace counting (comments and strings are
stripped first), which is enough for code that `cargo fmt` keeps tidy.
"""
import os
import re
import sys

FN_LINES_MAX = 70
MACRO_LINES_MAX = 300

# The money path: accept, claim, finish, settle, rescue, resolve, the worker's call loop.
MONEY_PATH = [
    "crates/domain/src/accept.rs",
    "crates/domain/src/attempt.rs",
    "crates/store/src/accept.rs",
    "crates/store/src/topups.rs",
    "crates/store/src/queue.rs",
    "crates/store/src/finish.rs",
    "crates/store/src/settle.rs",
    "crates/store/src/ledger.rs",
    "crates/store/src/common.rs",
    "crates/store/src/group_commit.rs",
    "crates/service/src/accept.rs",
    "crates/service/src/settle.rs",
    "crates/service/src/resolve.rs",
]


def strip(text):
    """Removes comments and the contents of string literals, keeping lines."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not text[i - 1].isalnum()):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = '"' + hashes
            j = text.find(end, i + 2 + len(hashes))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:i + 4])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(text, open_brace):
    depth = 0
    for k in range(open_brace, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(text) - 1


def spans(text, pattern):
    """(name, first line, line count) of each item whose header matches `pattern`."""
    for m in re.finditer(pattern, text):
        brace = text.find("{", m.end())
        semi = text.find(";", m.end())
        if brace < 0 or (0 <= semi < brace):
            continue  # a declaration without a body
        end = block_end(text, brace)
        first = text.count("\n", 0, m.start()) + 1
        last = text.count("\n", 0, end) + 1
        yield m.group(1), first, last - first + 1


# ---------------------------------------------------------------- circles

def crates(root):
    base = os.path.join(root, "crates")
    for name in sorted(os.listdir(base)):
        src = os.path.join(base, name, "src")
        if os.path.isdir(src):
            yield name, src


def modules(src):
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(dirpath, f)
                parts = os.path.relpath(path, src)[:-3].split(os.sep)
                if parts[-1] == "mod":
                    parts = parts[:-1]
                if parts in (["lib"], ["main"]):
                    parts = []
                mods[tuple(parts)] = path
    return mods


def use_paths(text):
    paths = []
    for body in re.findall(r"\buse\s+((?:crate|super|self)\b[^;]*);", text):
        paths += expand(re.sub(r"\s+", "", body))
    paths += re.findall(r"\b((?:crate|super)(?:::[A-Za-z_]\w*)+)", text)
    return paths


def expand(path):
    m = re.match(r"^(.*?)::\{(.*)\}$", path, re.S)
    if not m:
        return [path]
    head, body, depth, cur, parts = m.group(1), m.group(2), 0, "", []
    for ch in body:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [q for p in parts if p.strip() for q in expand(head + "::" + p.strip())]


def edges(src):
    mods = modules(src)
    graph = {f: set() for f in mods.values()}
    for me, path in mods.items():
        text = strip(open(path, encoding="utf-8").read())
        text = re.sub(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{.*", "", text, flags=re.S)
        for p in use_paths(text):
            segs = p.split("::")
            if segs[0] == "crate":
                target = segs[1:]
            elif segs[0] == "self":
                target = list(me) + segs[1:]
            else:
                # `me` is the module's own path (a file `a/b.rs` is `a::b`, a
                # directory `a/b/mod.rs` too); each `super` is one step up.
                base, rest = list(me), segs
                while rest and rest[0] == "super":
                    base = base[:-1]
                    rest = rest[1:]
                target = base + rest
            target = [s for s in target if s not in ("self", "*")]
            for k in range(len(target), 0, -1):
                hit = mods.get(tuple(target[:k]))
                if hit:
                    if hit != path:
                        graph[path].add(hit)
                    break
    return graph


def cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    problems = []
    for name, src in crates(root):
        for comp in cycles(edges(src)):
            rel = [os.path.relpath(p, root) for p in comp]
            problems.append(f"import circle in {name}: " + " -> ".join(rel))
    for rel in MONEY_PATH:
        path = os.path.join(root, rel)
        if not os.path.exists(path):
            continue
        text = strip(open(path, encoding="utf-8").read())
        text = re.sub(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{.*", "", text, flags=re.S)
        for fname, line, count in spans(text, r"\bfn\s+([A-Za-z_]\w*)\b"):
            if count > FN_LINES_MAX:
                problems.append(f"{rel}:{line}: fn {fname} is {count} lines (money path: at most {FN_LINES_MAX})")
    for dirpath, _, files in os.walk(os.path.join(root, "crates")):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(dirpath, f)
                text = strip(open(path, encoding="utf-8").read())
                for mname, line, count in spans(text, r"macro_rules!\s*([A-Za-z_]\w*)"):
                    if count > MACRO_LINES_MAX:
                        rel = os.path.relpath(path, root)
                        problems.append(f"{rel}:{line}: macro {mname} is {count} lines (at most {MACRO_LINES_MAX})")
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
