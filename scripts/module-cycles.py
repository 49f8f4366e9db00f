#!/usr/bin/env python3
"""Usage: scripts/module-cycles.py CRATE/src [--quiet]. Exits 1 when the crate's modules import
each other in a circle.

Module import graph of one crate's src/: every `crate::`/`super::`/`self::` path in code
(use trees, inline paths; comments stripped), resolved to the module that defines it (root
re-exports in lib.rs followed), then strongly connected components at two granularities:
every module, and top-level modules (children folded into their parent)."""
import os, re, sys
from collections import defaultdict

src = sys.argv[1]
files = {}
for root, _, names in os.walk(src):
    for n in names:
        if n.endswith('.rs'):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, src)[:-3].split(os.sep)
            if rel == ['lib']: mod = ()
            elif rel == ['main']:
                # A binary's root, unless the crate has a library (whose root is lib.rs).
                if os.path.exists(os.path.join(src, 'lib.rs')): continue
                mod = ()
            elif rel[-1] == 'mod': mod = tuple(rel[:-1])
            else: mod = tuple(rel)
            files[mod] = open(p).read()

def strip(code):
    code = re.sub(r'/\*.*?\*/', '', code, flags=re.S)
    code = re.sub(r'"(?:\\.|[^"\\])*"', '""', code)  # strings (serde attrs keep no paths we need)
    return re.sub(r'//.*', '', code)

def expand(tree):
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']"""
    tree = tree.strip()
    m = re.match(r'^([\w:]*?)(::)?\{(.*)\}$', tree, re.S)
    if not m: return [tree.split(' as ')[0].strip()]
    prefix, body = m.group(1), m.group(3)
    parts, depth, cur = [], 0, ''
    for ch in body:
        if ch == '{': depth += 1
        if ch == '}': depth -= 1
        if ch == ',' and depth == 0: parts.append(cur); cur = ''
        else: cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        if part.strip():
            for e in expand(part):
                out.append(prefix + '::' + e if prefix else e)
    return out

def paths_in(mod, code):
    code = strip(code)
    # an inline `mod tests { ... }` (always last in a file here) is a child of the file's module
    m = re.search(r'\bmod tests\s*\{', code)
    if m:
        inner = paths_in(mod + ('tests',), code[m.end():])
        return paths_in(mod, code[:m.start()]) + [p[:len(mod)] if p[:len(mod) + 1] == mod + ('tests',) else p for p in inner]
    found = []
    for m in re.finditer(r'\buse\s+([^;]+);', code):
        found += expand(m.group(1))
    code = re.sub(r'\buse\s+[^;]+;', '', code)
    found += re.findall(r'\b(?:crate|super|self)(?:::\w+)+', code)
    out = []
    for p in found:
        segs = [s for s in p.split('::') if s]
        if not segs: continue
        if segs[0] not in ('crate', 'super', 'self'):
            # a 2018 relative path: a child module of this one (or anything, at the crate root)
            if mod + (segs[0],) in files or (mod == () and segs[0] not in ('std', 'core', 'alloc')):
                segs = ['self'] + segs
            else:
                continue
        base = list(mod)
        if segs[0] == 'crate': base, segs = [], segs[1:]
        while segs and segs[0] in ('super', 'self'):
            if segs[0] == 'super': base = base[:-1]
            segs = segs[1:]
        out.append(tuple(base) + tuple(segs))
    return out

# Root re-exports: item name -> full path.
reexport = {}
for p in paths_in((), re.sub(r'(?s)^.*?(?=\bpub use)', '', files.get((), ''), count=1)):
    if len(p) >= 2: reexport[p[-1]] = p

def resolve(path, seen=0):
    # longest prefix that is a module
    for k in range(len(path), -1, -1):
        if path[:k] in files:
            if k == 0 and path and path[0] in reexport and seen < 5:
                return resolve(reexport[path[0]], seen + 1)
            return path[:k]
    return None

edges = defaultdict(set)
for mod, code in files.items():
    if mod == (): continue
    # a `mod tests` inside a file is the same module; child files are separate nodes
    for p in paths_in(mod, code):
        tgt = resolve(p)
        if tgt is None or tgt == mod or tgt == (): continue
        if tgt[:len(mod)] == mod and len(tgt) > len(mod):
            edges[mod].add(tgt)  # parent using its child
        else:
            edges[mod].add(tgt)

def scc(nodes, edges):
    index, low, stack, on, out, i = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            out.append(comp)
    for v in nodes:
        if v not in index: visit(v)
    return out

name = lambda m: '::'.join(m)
nodes = [m for m in files if m != ()]
if '--quiet' not in sys.argv:
    print('== edges (module -> modules it uses)')
    for m in sorted(nodes):
        print(f'{name(m):22} -> {", ".join(sorted(name(t) for t in edges[m]))}')
cycles = [c for c in scc(nodes, edges) if len(c) > 1]
found = bool(cycles)
print(f'{src}: cycles, every module:', cycles and [sorted(map(name, c)) for c in cycles] or 'none')
top = defaultdict(set)
for m in nodes:
    for t in edges[m]:
        if t[0] != m[0]: top[m[0]].add(t[0])
cycles = [c for c in scc(sorted({m[0] for m in nodes}), top) if len(c) > 1]
found = found or bool(cycles)
print(f'{src}: cycles, top-level modules (children folded in):', cycles and [sorted(c) for c in cycles] or 'none')
sys.exit(1 if found else 0)
