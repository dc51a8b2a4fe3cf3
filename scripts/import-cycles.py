#!/usr/bin/env python3
"""Import cycles between the source files of a crate. A file depends on another when it
names a path into it (`crate::a::b`, `super::x`, grouped `crate::a::{b, c}` imports
expanded, and a parent's relative use of its own child modules, `child::item`); comments
and inline test modules are left out, and a method call is not a path. Prints the two-file
cycles and the larger strongly connected groups of each crate; exits 1 if there is any.

    scripts/import-cycles.py src python/src      (scripts/test.sh runs this)
"""
import os
import re
import sys


def modules(root):
    """Module path ('worker::http::conn'; '' for the crate root) -> file."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(dirpath, name)
                mod = os.path.relpath(path, root)[:-3].replace("/", "::")
                if mod.endswith("::mod"):
                    mod = mod[: -len("::mod")]
                if mod in ("lib", "main"):
                    mod = ""
                files[mod] = path
    return files


def expand_groups(src):
    def one(m):
        prefix, inner = m.group(1), m.group(2)
        return " ".join(prefix + "::" + p.strip() for p in inner.split(",") if p.strip())

    return re.sub(r"\b((?:crate|super)(?:::[A-Za-z_]\w*)*)::\{([^{}]*)\}", one, src)


def edges_of(files):
    mods = set(files)

    def resolve(path):
        parts = path.split("::")
        for i in range(len(parts), 0, -1):
            if "::".join(parts[:i]) in mods:
                return "::".join(parts[:i])
        return None

    edges = {m: set() for m in mods}
    for mod, path in files.items():
        src = open(path).read()
        src = re.split(r"#\[cfg\(test\)\]\s*mod tests", src)[0]
        src = re.sub(r"//[^\n]*", "", src)
        src = expand_groups(src)
        base = mod.split("::") if mod else []
        is_dir = path.endswith("mod.rs") or mod == ""
        here = base if is_dir else base
        for child in re.findall(r"^\s*(?:pub(?:\([a-z]+\))? )?mod (\w+);", src, re.M):
            full = "::".join(here + [child])
            if full in mods and re.search(r"\b" + child + r"::", src):
                edges[mod].add(full)
        parent = base if is_dir else base[:-1]
        for m in re.finditer(r"\b(crate|super)((?:::[A-Za-z_]\w*)+)", src):
            rest = m.group(2)[2:]
            if m.group(1) == "crate":
                full = rest
            else:
                up = parent
                while rest.startswith("super::"):
                    rest, up = rest[len("super::"):], up[:-1]
                full = "::".join(up + [rest])
            target = resolve(full)
            if target not in (None, "", mod):
                edges[mod].add(target)
    return edges


def strongly_connected(edges):
    index, low, stack, on, groups = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            groups.append(group)

    for v in edges:
        if v not in index:
            visit(v)
    return [sorted(g) for g in groups if len(g) > 1]


def main(roots):
    found = 0
    for root in roots:
        edges = edges_of(modules(root))
        pairs = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, ())})
        groups = strongly_connected(edges)
        print(f"{root}: {len(pairs)} two-file cycles, {len(groups)} strongly connected groups")
        for a, b in pairs:
            print(f"   {a or '(root)'} <-> {b or '(root)'}")
        for g in groups:
            print(f"   group of {len(g)}: {', '.join(x or '(root)' for x in g)}")
        found += len(groups)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["src"]))
