#!/usr/bin/env python3
"""MSL -> C++ source pre-pass of the Metal-on-CPU emulator.

Rewrites the handful of MSL constructs clang C++ cannot express directly and
emits kernel registration. Every rewrite keeps line breaks where they were,
so compiler diagnostics point at the original .metal lines.

  * `kernel` / `[[kernel]]` functions: a table of parameter roles (from
    [[buffer(n)]], [[threadgroup(n)]], builtin attributes) and, for plain
    functions, a registration under their own name.
  * `template [[host_name("x")]] [[kernel]] decltype(f<T>) f<T>;` (also the
    `void f<T>(...)` form, also inside macros): registration of f<T> as "x".
  * other MSL attributes are removed.
  * `threadgroup T name[..];` inside functions becomes a reference into the
    threadgroup arena, shared by the lanes of one threadgroup.
  * `constant` arrays at function scope become static.
  * vector constructors `float4(...)`, `vec<T,N>(...)`, vector typedefs,
    functional casts to template type parameters and half/bfloat, every
    `static_cast<X>(...)` and C-style `(float4)x`/`(T)x` casts use
    mtlemu::construct / vctor / vcast with MSL conversion semantics.
  * `constant T x [[function_constant(i)]];` reads the launch's value; program
    scope `constant` values computed from function constants are re-evaluated.
  * `short2 p(a, b);` vector direct initialisation becomes copy
    initialisation from mtlemu::construct.
  * overloads that differ only in address spaces (MSL classes and helpers
    overload on `thread`/`threadgroup`/`device`/`constant`) are reduced to
    one, since the emulator has a single flat address space.
  * `1.0h` half literals become `1.0f16`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import zlib

VEC_BASES = ["float", "half", "bfloat", "int", "uint", "short", "ushort", "char", "uchar", "long", "ulong", "bool"]
VEC_NAMES = {f"{b}{n}" for b in VEC_BASES for n in (2, 3, 4, 8, 16)}

BUILTINS = {
    "thread_position_in_grid": "kThreadPositionInGrid",
    "thread_position_in_threadgroup": "kThreadPositionInThreadgroup",
    "threadgroup_position_in_grid": "kThreadgroupPositionInGrid",
    "threads_per_threadgroup": "kThreadsPerThreadgroup",
    "dispatch_threads_per_threadgroup": "kThreadsPerThreadgroup",
    "threadgroups_per_grid": "kThreadgroupsPerGrid",
    "threads_per_grid": "kThreadsPerGrid",
    "thread_index_in_threadgroup": "kThreadIndexInThreadgroup",
    "thread_index_in_simdgroup": "kThreadIndexInSimdgroup",
    "simdgroup_index_in_threadgroup": "kSimdgroupIndexInThreadgroup",
    "simdgroups_per_threadgroup": "kSimdgroupsPerThreadgroup",
    "dispatch_simdgroups_per_threadgroup": "kSimdgroupsPerThreadgroup",
    "threads_per_simdgroup": "kThreadsPerSimdgroup",
    "thread_execution_width": "kThreadsPerSimdgroup",
    "thread_index_in_quadgroup": "kThreadIndexInQuadgroup",
    "quadgroup_index_in_threadgroup": "kQuadgroupIndexInThreadgroup",
}

# Standard C++ attributes survive; everything else in [[...]] is MSL.
STD_ATTR = re.compile(r"^\s*(likely|unlikely|maybe_unused|nodiscard|fallthrough|noreturn|deprecated|clang::|gnu::)")


class PrepassError(Exception):
    pass


def mask_code(src: str) -> str:
    """Blank out comments and the contents of string/char literals (keeping
    newlines and length) so the regexes below only ever see code."""
    out = list(src)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c == "/" and i + 1 < n and src[i + 1] == "/":
            j = src.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif c == "/" and i + 1 < n and src[i + 1] == "*":
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if src[k] != "\n":
                    out[k] = " "
            i = j
        elif c == '"' or (c == "'" and not (i > 0 and src[i - 1].isalnum())):
            j = i + 1
            while j < n and src[j] != c:
                j += 2 if src[j] == "\\" else 1
            for k in range(i + 1, min(j, n)):
                if src[k] != "\n":
                    out[k] = " "
            i = j + 1
        else:
            i += 1
    return "".join(out)


def match_close(m: str, i: int, open_c: str, close_c: str) -> int:
    """Index of the bracket closing the one at m[i]."""
    depth = 0
    for j in range(i, len(m)):
        if m[j] == open_c:
            depth += 1
        elif m[j] == close_c:
            depth -= 1
            if depth == 0:
                return j
    raise PrepassError(f"unbalanced {open_c}{close_c} at offset {i}")


def match_angle(m: str, i: int) -> int:
    """Index of the '>' closing the template bracket at m[i]. Comparison
    operators are skipped: '<'/'>' inside parentheses, or with blanks on both
    sides (`enable_if_t<sizeof(T) < 8, bool>`), and '<=', '>=', '->', '<<'."""
    depth, parens = 0, 0
    j = i
    while j < len(m):
        c = m[j]
        if c == "(":
            parens += 1
        elif c == ")":
            parens -= 1
        elif c in ";{}":
            break
        elif parens == 0 and c in "<>":
            prev, nxt = m[j - 1] if j else " ", m[j + 1] if j + 1 < len(m) else " "
            spaced = prev in " \t\n" and nxt in " \t\n"
            if c == "<" and j != i and (spaced or nxt in "<=" or prev == "<"):
                j += 1
                continue
            if c == ">" and (prev in "-=" or nxt == "=" or spaced):
                j += 1
                continue
            depth += 1 if c == "<" else -1
            if depth == 0:
                return j
        j += 1
    raise PrepassError(f"unbalanced <> at offset {i}")


def split_top(s: str, sep: str = ",") -> list[tuple[int, int]]:
    """Spans of s split at top-level separators (outside (), [], {}, <>)."""
    spans, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        elif c == sep and depth == 0:
            spans.append((start, i))
            start = i + 1
    spans.append((start, len(s)))
    return [sp for sp in spans if s[sp[0]:sp[1]].strip()]


class Edits:
    def __init__(self):
        self.items: list[tuple[int, int, str]] = []

    def overlaps(self, a: int, b: int) -> bool:
        return any(a < e and s < b for s, e, _ in self.items if s != e) if a != b else False

    def add(self, a: int, b: int, text: str) -> bool:
        if self.overlaps(a, b):
            return False
        self.items.append((a, b, text))
        return True

    def apply(self, src: str) -> str:
        for a, b, text in sorted(self.items, key=lambda t: (t[0], t[1]), reverse=True):
            src = src[:a] + text + src[b:]
        return src


def keep_lines(original: str, text: str) -> str:
    """Pad a one-line replacement with the line breaks (and macro
    continuations) of the text it replaces."""
    n = original.count("\n")
    if n == 0:
        return text
    if "\\\n" in original:
        return text + " \\\n" * n
    return text + "\n" * n


def brace_depths(m: str) -> list[int]:
    depths, d = [], 0
    for c in m:
        if c == "}":
            d -= 1
        depths.append(d)
        if c == "{":
            d += 1
    return depths


def statement_start(m: str, i: int) -> bool:
    j = i - 1
    while j >= 0 and m[j] in " \t\r\n\\":
        j -= 1
    if j < 0 or m[j] in ";{}":
        return True
    line_start = m.rfind("\n", 0, j + 1) + 1
    return m[line_start:j + 1].lstrip().startswith("#")


class Prepass:
    def __init__(self, src: str, filename: str):
        self.src = src
        self.m = mask_code(src)
        self.filename = filename
        self.edits = Edits()
        self.kernels: list[dict] = []
        self.instances: list[dict] = []
        self.site = 0
        self.tag = format(zlib.crc32(filename.encode()), "x")  # site names unique across headers

    def line_of(self, i: int) -> int:
        return self.src.count("\n", 0, i) + 1

    # -------------------------------------------------------------- kernels
    def attrs_at(self, i: int) -> tuple[list[str], int]:
        """Consecutive [[...]] attributes starting at (or after blanks) i."""
        attrs, m = [], self.m
        while True:
            j = i
            while j < len(m) and m[j] in " \t\r\n\\":
                j += 1
            if not m.startswith("[[", j):
                return attrs, i
            k = m.find("]]", j)
            inner_m = m[j + 2:k]
            attrs += [self.src[j + 2 + x:j + 2 + y].strip() for x, y in split_top(inner_m)]
            i = k + 2

    def do_instantiations(self):
        m = self.m
        for mt in re.finditer(r"\btemplate\b(?=\s*\[\[)", m):
            attrs, j = self.attrs_at(mt.end())
            host = [a for a in attrs if re.match(r"host_name\s*\(", a)]
            if not host:
                continue
            host_expr = re.match(r"host_name\s*\((.*)\)\s*$", host[0], re.S).group(1).strip()
            end = j
            depth = 0
            while end < len(m) and not (m[end] == ";" and depth == 0):
                depth += m[end] in "(<[" and 1 or (m[end] in ")>]" and -1 or 0)
                end += 1
            decl_m = m[j:end]
            decl = self.src[j:end]
            dm = re.search(r"\bdecltype\s*\(", decl_m)
            if dm:
                close = match_close(decl_m, dm.end() - 1, "(", ")")
                fn = decl[dm.end():close]
            else:
                body = re.sub(r"^\s*(\[\[[^\]]*\]\]\s*)*(kernel\s+)?void\s+", "", decl)
                fn = body[: body.index("(")] if "(" in body else body
            fn = " ".join(fn.replace("\\\n", " ").split())
            base = re.match(r"^(.*?)(\w+)\s*(<.*)?$", fn, re.S)
            if not base:
                raise PrepassError(f"{self.filename}:{self.line_of(mt.start())}: cannot parse kernel instantiation")
            # Token pasting, not text: inside a macro the name may be a macro
            # parameter (MLX: `decltype(func<__VA_ARGS__>) func<__VA_ARGS__>`).
            roles = f"{base.group(1)}MTLEMU_ROLES({base.group(2)})"
            text = f"MTLEMU_REGISTER({host_expr}, {roles}, {fn});"
            self.edits.add(mt.start(), end + 1, keep_lines(self.src[mt.start():end + 1], text))
            self.instances.append({"host_name": host_expr, "function": fn, "line": self.line_of(mt.start())})

    def param_roles(self, params: str, name: str, line: int) -> list[str]:
        roles, used, parsed, spaces, optional = [], set(), [], [], []
        for a, b in split_top(mask_code(params)):
            p = params[a:b]
            attrs = []
            for group in re.findall(r"\[\[\s*(.*?)\s*\]\]", p, re.S):
                attrs += [group[x:y].strip() for x, y in split_top(mask_code(group))]
            role, opt = None, False
            for at in attrs:
                bm = re.match(r"(buffer|threadgroup)\s*\((.*)\)$", at, re.S)
                if bm:
                    kind = "kArgBuffer" if bm.group(1) == "buffer" else "kArgThreadgroup"
                    role = (kind, bm.group(2).strip())
                    if kind == "kArgBuffer" and bm.group(2).strip().isdigit():
                        used.add(int(bm.group(2)))
                elif at.split("(")[0].strip() in BUILTINS:
                    role = ("kArgBuiltin", "::mtlemu::" + BUILTINS[at.split("(")[0].strip()])
                elif at.startswith("function_constant"):
                    opt = True  # bound only when the constant is true: may be missing
                elif at.startswith("stage_in"):
                    raise PrepassError(f"{self.filename}:{line}: kernel '{name}': [[{at}]] is not supported")
            if role is None:
                if "*" in p or "&" in p:
                    role = ("auto", None)
                else:
                    raise PrepassError(f"{self.filename}:{line}: kernel '{name}': parameter '{p.strip()}' "
                                       "has no [[buffer]]/[[threadgroup]]/builtin attribute")
            parsed.append(role)
            optional.append(opt)
            words = set(re.findall(r"\w+", re.sub(r"\[\[.*?\]\]", "", p, flags=re.S)))
            spaces.append(2 if "constant" in words else 3 if "threadgroup" in words else 1)
        nxt = 0
        for (kind, idx), space, opt in zip(parsed, spaces, optional):
            if kind == "auto":
                while nxt in used:
                    nxt += 1
                used.add(nxt)
                kind, idx = "kArgBuffer", str(nxt)
            if kind == "kArgBuiltin":
                roles.append(f"{{::mtlemu::kArgBuiltin, {idx}, 0, 0}}")
            else:
                roles.append(f"{{::mtlemu::{kind}, int({idx}), {space}, {int(opt)}}}")
        return roles

    def do_kernels(self):
        m = self.m
        # [[kernel]] also appears in lists: [[kernel, max_total_threads_per_threadgroup(256)]]
        markers = [(mt.start(), mt.end()) for mt in re.finditer(r"\[\[(.*?)\]\]", m, re.S)
                   if any(mt.group(1)[x:y].strip() == "kernel" for x, y in split_top(mt.group(1)))]
        markers += [(mt.start(), mt.end()) for mt in re.finditer(r"(?<![\w.:])kernel(?=\s+void\b)", m)]
        for a, b in sorted(markers):
            if self.edits.overlaps(a, b):
                continue  # part of an explicit instantiation already handled
            if m[a] == "k":
                self.edits.add(a, b, "")
            _, j = self.attrs_at(b)
            hm = re.compile(r"\s*(?:\[\[[^\]]*\]\]\s*)*void\s+(\w+)\s*(?:\[\[[^\]]*\]\]\s*)*\(").match(m, j)
            if not hm:
                continue
            name = hm.group(1)
            popen = hm.end() - 1
            pclose = match_close(m, popen, "(", ")")
            k = pclose + 1
            while k < len(m) and m[k] in " \t\r\n\\":
                k += 1
            if k >= len(m) or m[k] != "{":
                continue  # a declaration; the definition carries the marker too
            bclose = match_close(m, k, "{", "}")
            is_template = re.search(r"template\s*<[^;{}]*>\s*$", m[max(0, a - 2000):a]) is not None
            line = self.line_of(a)
            roles = self.param_roles(self.src[popen + 1:pclose], name, line)
            decl_start = max(m.rfind(";", 0, a), m.rfind("}", 0, a), m.rfind("{", 0, a)) + 1
            mx = re.search(r"max_total_threads_per_threadgroup\s*\(", m[decl_start:popen])
            max_threads = "0"
            if mx:
                o = decl_start + mx.end() - 1
                max_threads = self.src[o + 1:match_close(m, o, "(", ")")].strip()
                if is_template and not max_threads.isdigit():
                    max_threads = "0"  # may name template parameters: not enforced
            # The table ends with a kArgLimits entry (one past the parameters).
            table = ", ".join(roles + [f"{{::mtlemu::kArgLimits, int({max_threads}), 0}}"])
            text = f" static constexpr ::mtlemu::ArgRole __mtlemu_roles_{name}[] = {{{table}}};"
            if not is_template:
                text += f' MTLEMU_REGISTER("{name}", __mtlemu_roles_{name}, {name});'
            self.edits.add(bclose + 1, bclose + 1, text)
            self.kernels.append({"name": name, "template": is_template, "line": line, "roles": roles})

    # -------------------------------------------------------------- memory
    def in_define(self, i: int) -> bool:
        """Is position i inside a #define body (following continuations)?"""
        line_start = self.m.rfind("\n", 0, i) + 1
        while line_start > 1 and self.m[line_start - 2] == "\\":
            line_start = self.m.rfind("\n", 0, line_start - 1) + 1
        return re.match(r"\s*#\s*define\b", self.m[line_start:i]) is not None

    def do_threadgroup_locals(self, depths: list[int]):
        """`threadgroup T a[N], b;` in a function (or a macro body) becomes
        references into the threadgroup arena. A declaration that cannot be
        parsed is an error: left alone it would silently become a private
        array per thread."""
        m = self.m
        for mt in re.finditer(r"(?<![\w:])threadgroup\b", m):
            i = mt.start()
            if not (depths[i] > 0 or self.in_define(i)) or not statement_start(m, i):
                continue
            end = m.find(";", i)
            stmt_m = m[mt.end():end]
            decls = split_top(stmt_m)
            heads = [stmt_m[x:y].split("[")[0] for x, y in decls]
            if any(c in re.sub(r"<[^;]*>", "", h) for h in heads for c in "*&(="):
                continue  # pointer/reference/function declaration, not storage
            line = self.line_of(i)
            first = re.match(r"\s*(.*\S)\s+(\w+)\s*$", heads[0], re.S)
            if not first:
                raise PrepassError(f"{self.filename}:{line}: cannot parse threadgroup declaration")
            ty_end = mt.end() + decls[0][0] + first.end(1)
            ty_src = " ".join(self.src[mt.end() + decls[0][0]:ty_end].replace("\\\n", " ").split())
            pieces = []
            for (x, y), head in zip(decls, heads):
                nm = re.match(r"\s*(?:.*\s)?(\w+)\s*$", head, re.S)
                dims_m = stmt_m[x + len(head):y]
                if not nm or (dims_m.strip() and not re.fullmatch(r"(\s*\[[^\]]*\])+\s*", dims_m)):
                    raise PrepassError(f"{self.filename}:{line}: cannot parse threadgroup declaration")
                name = nm.group(1)
                dims = " ".join(self.src[mt.end() + x + len(head):mt.end() + y].replace("\\\n", " ").split())
                self.site += 1
                site = f"mtlemu_tg_site_{self.tag}_{self.site}"
                fname = self.filename.replace("\\", "/").replace('"', "")
                if dims:
                    decl = (f"threadgroup {ty_src} (&{name}){dims} = *(threadgroup {ty_src} (*){dims})"
                            f"mtlemu_tg_alloc(&{site}, sizeof({ty_src}{dims}), alignof({ty_src}));")
                else:
                    decl = (f"threadgroup {ty_src} &{name} = *(threadgroup {ty_src} *)"
                            f"mtlemu_tg_alloc(&{site}, sizeof({ty_src}), alignof({ty_src}));")
                pieces.append(f'static ::mtlemu::TgSite {site} = {{"{name}", "{fname}", {line}, 0, nullptr}}; '
                              + decl)
            self.edits.add(i, end + 1, keep_lines(self.src[i:end + 1], " ".join(pieces)))

    def do_local_constants(self, depths: list[int]):
        m = self.m
        for mt in re.finditer(r"(?<![\w:])(?:(?:constexpr|const)\s+)*constant\b", m):
            i = mt.start()
            if depths[i] <= 0 or not statement_start(m, i):
                continue
            end = m.find(";", i)
            head = m[i:end].split("=")[0]
            if "*" in head or "&" in head or "(" in head:
                continue
            self.edits.add(i, i, "static ")

    # -------------------------------------------------------------- address-space overloads
    @staticmethod
    def _as_key(text: str) -> str:
        """Declaration text as C++ sees it here: `constant` is const, the
        other address spaces vanish."""
        text = re.sub(r"\bconstant\b", "const", text)
        text = re.sub(r"\b(thread|threadgroup|device)\b", " ", text)
        text = " ".join(text.split())
        while "const const" in text:
            text = text.replace("const const", "const")
        return text

    def _enclosing_scope(self, start: int) -> int:
        m, depth = self.m, 0
        for j in range(start - 1, -1, -1):
            if m[j] == "}":
                depth += 1
            elif m[j] == "{":
                if depth == 0:
                    return j
                depth -= 1
        return -1

    def do_address_space_overloads(self):
        """MSL overloads on address spaces: member functions on the object's
        (`complex_t() thread`, `complex_t() threadgroup`), free functions and
        class template specializations on their parameters'
        (`operator+=(thread T&, ..)`, `pointer_element<device T*>`). With one
        flat address space these are redefinitions: of each group of
        definitions that are identical as C++ sees them, keep the first.
        A trailing `constant` qualifier is dropped rather than becoming const
        (constructors cannot be const)."""
        m = self.m
        as_kw = re.compile(r"\b(thread|threadgroup|device|constant)\b")
        tail = re.compile(r"\)\s*(const\s+)?(?:(thread|threadgroup|device|constant)\s*)?(?:noexcept\s*)?"
                          r"(?:->[^{;]*?)?(?=[{:])")
        seen = set()
        for mt in tail.finditer(m):
            close = mt.start()
            if m[mt.end()] == ":" and not mt.group(2):
                continue  # `x ? (a) : b`, labels... only constructors with a qualifier take this form
            depth, open_ = 0, None
            for j in range(close, -1, -1):  # the matching '('
                if m[j] == ")":
                    depth += 1
                elif m[j] == "(":
                    depth -= 1
                    if depth == 0:
                        open_ = j
                        break
            if open_ is None:
                continue
            before = m[:open_].rstrip()
            if not before or not (before[-1].isalnum() or before[-1] in "_>=+-*/&|^!<[]%~"):
                continue
            if re.search(r"\b(if|for|while|switch|catch|return|sizeof|decltype)$", before):
                continue
            start = max(m.rfind(";", 0, open_), m.rfind("{", 0, open_), m.rfind("}", 0, open_)) + 1
            sig = m[start:close + 1]
            if not (mt.group(2) or as_kw.search(sig)):
                continue
            key = (self._enclosing_scope(start), self._as_key(sig), bool(mt.group(1)))
            k = mt.end()
            while k < len(m) and m[k] not in "{;":
                if m[k] == "(":
                    k = match_close(m, k, "(", ")")
                k += 1
            if k >= len(m) or m[k] != "{":
                continue
            end = match_close(m, k, "{", "}") + 1
            if end < len(m) and m[end] == ";":
                end += 1
            if key in seen:
                self.edits.add(start, end, keep_lines(self.src[start:end], ""))
                continue
            seen.add(key)
            if mt.group(2) == "constant":
                self.edits.add(mt.start(2), mt.end(2), "")
        for mt in re.finditer(r"\b(?:struct|class)\s+\w+\s*<", m):
            close = match_angle(m, mt.end() - 1)
            k = close + 1
            while k < len(m) and m[k] not in "{;":
                k += 1
            if k >= len(m) or m[k] != "{":
                continue
            start = max(m.rfind(";", 0, mt.start()), m.rfind("{", 0, mt.start()), m.rfind("}", 0, mt.start())) + 1
            header = m[start:k]
            if not as_kw.search(m[mt.end():close]):
                continue
            key = ("class", self._enclosing_scope(start), self._as_key(header))
            end = match_close(m, k, "{", "}") + 1
            if end < len(m) and m[end] == ";":
                end += 1
            if key in seen:
                self.edits.add(start, end, keep_lines(self.src[start:end], ""))
            else:
                seen.add(key)

    def do_vector_direct_init(self, depths: list[int]):
        """`short2 offset(a, b);` declares a vector by direct initialisation,
        which clang rejects for ext vectors: becomes `short2 offset = ...`."""
        m = self.m
        alt = "|".join(sorted(VEC_NAMES, key=len, reverse=True))
        for mt in re.finditer(r"(?<![\w.:>])((?:metal::)?(?:" + alt + r"))\s+(\w+)\s*\(", m):
            if depths[mt.start()] <= 0:
                continue
            before = re.sub(r"(\b(const|constexpr|static|thread)\s*)+$", "", m[:mt.start()]).rstrip()
            if before and before[-1] not in ";{}":
                continue
            popen = mt.end() - 1
            pclose = match_close(m, popen, "(", ")")
            after = m[pclose + 1:].lstrip()
            if not after or after[0] not in ";,":
                continue
            args = [m[popen + 1 + x:popen + 1 + y] for x, y in split_top(m[popen + 1:pclose])]
            if args and all(re.fullmatch(r"\s*[\w:<>, ]+?[\s*&]+\w+\s*", a) for a in args):
                continue  # a function prototype `float4 f(float x);`
            vec = self.src[mt.start(1):mt.end(1)]
            self.edits.add(mt.start(2), popen + 1, f"{mt.group(2)} = ::mtlemu::construct<{vec}>(")

    # -------------------------------------------------------------- function constants
    def do_function_constants(self):
        m = self.m
        names: set[str] = set()
        decl = re.compile(r"(?<![\w:])(?:static\s+)?constant\s+(?:const\s+)?([\w:]+(?:\s*<[^;]*?>)?)\s+(\w+)\s*"
                          r"\[\[\s*function_constant\s*\((.*?)\)\s*\]\]\s*;", re.S)
        derived = re.compile(r"(?<![\w:])(?:static\s+)?constant\s+(?:constexpr\s+)?(?:const\s+)?"
                             r"([\w:]+(?:\s*<[^;]*?>)?)\s+(\w+)\s*=([^;]*);", re.S)
        events = [(mt.start(), "decl", mt) for mt in decl.finditer(m)]
        events += [(mt.start(), "derived", mt) for mt in derived.finditer(m)]
        for _, kind, mt in sorted(events, key=lambda e: e[0]):
            a, b = mt.start(), mt.end()
            ty, name = self.src[mt.start(1):mt.end(1)], mt.group(2)
            if kind == "decl":
                idx = self.src[mt.start(3):mt.end(3)]
                text = f"static const ::mtlemu::FunctionConstant<{ty}> {name}{{int({idx})}};"
            else:
                expr_m = mt.group(3)
                uses = set(re.findall(r"\w+", expr_m))
                if not (uses & names or "is_function_constant_defined" in uses):
                    continue
                expr = self.src[mt.start(3):mt.end(3)]
                text = (f"static const auto {name} = ::mtlemu::derived_constant<{ty}>("
                        f"[]() -> {ty} {{ return {expr.strip()}; }});")
            if self.edits.add(a, b, keep_lines(self.src[a:b], text)):
                names.add(name)

    # -------------------------------------------------------------- vectors
    def do_vectors(self):
        m = self.m
        names = set(VEC_NAMES)
        vec_rhs = r"(?:metal::)?(?:vec\s*<[^;]*>|" + "|".join(sorted(VEC_NAMES)) + r")"
        for mt in re.finditer(r"\btypedef\s+" + vec_rhs + r"\s+(\w+)\s*;", m):
            names.add(mt.group(1))
        for mt in re.finditer(r"\busing\s+(\w+)\s*=\s*" + vec_rhs + r"\s*;", m):
            names.add(mt.group(1))
        # Scalar casts needing MSL semantics, and template type parameters
        # (which may be vectors or half/bfloat when instantiated).
        cast_names = {"half", "bfloat", "bfloat16_t", "float16_t"}
        for mt in re.finditer(r"\btemplate\s*<", m):
            close = match_angle(m, mt.end() - 1)
            cast_names.update(re.findall(r"\b(?:typename|class)\s+(\w+)", m[mt.end():close]))
        cast_names -= {"enable_if", "conditional", "void"}
        names |= cast_names
        alt = "|".join(sorted(names, key=len, reverse=True))
        # constructor calls: float4(...), metal::half2(...), alias(...), T(...)
        for mt in re.finditer(r"(?<![\w.>:~])((?:metal::)?(?:" + alt + r"))\s*\(", m):
            a, b = mt.start(1), mt.end(1)
            before = m[:a].rstrip()
            if re.search(r"\b(typedef|using|struct|class|operator|typename)\s*$", before):
                continue
            if before.endswith(":") and not before.endswith("::"):
                stmt = m[max(m.rfind(";", 0, a), m.rfind("{", 0, a), m.rfind("}", 0, a)) + 1:a]
                if "?" not in stmt:
                    continue  # constructor initializer list: `: T(x)` names a base
            if re.match(r"\(\s*[&*]+\s*\w+\s*\)", m[mt.end() - 1:]):
                continue  # a declarator: `T (&vals)[N]`, `T (*fn)(..)`
            self.edits.add(a, b, f"::mtlemu::construct<{self.src[a:b]}>")
        # vec<T, N>(...)
        for mt in re.finditer(r"(?<![\w.>])(?:metal::)?vec\s*<", m):
            close = match_angle(m, mt.end() - 1)
            k = close + 1
            while k < len(m) and m[k] in " \t":
                k += 1
            if k < len(m) and m[k] == "(" and not re.search(r"\boperator\s*$", m[:mt.start()]):
                t = self.src[mt.start():close + 1]
                self.edits.add(mt.start(), close + 1, f"::mtlemu::vctor<{t}>")
        # static_cast<X>(x) for every X
        for mt in re.finditer(r"\bstatic_cast\s*<", m):
            close = match_angle(m, mt.end() - 1)
            t = self.src[mt.end():close]
            self.edits.add(mt.start(), close + 1, f"::mtlemu::construct<{t}>")
        # C-style casts (float4)x, (bfloat)x, (T)x
        for mt in re.finditer(r"\(\s*((?:metal::)?(?:" + alt + r"))\s*\)", m):
            before = m[:mt.start()].rstrip()
            prev = before[-1:] if before else ""
            if prev and (prev.isalnum() or prev in "_)]"):
                if not re.search(r"\b(return|case)$", before):
                    continue
            after = m[mt.end():].lstrip()
            if not after or not (after[0].isalnum() or after[0] in "_(-!~*&.+"):
                continue
            self.edits.add(mt.start(), mt.end(), f"::mtlemu::vcast<{mt.group(1)}>()->*")

    def do_attributes(self):
        for mt in re.finditer(r"\[\[(.*?)\]\]", self.m, re.S):
            if STD_ATTR.match(mt.group(1)):
                continue
            if self.edits.overlaps(mt.start(), mt.end()):
                continue  # inside a construct already rewritten
            if re.match(r"\s*function_constant\b", mt.group(1)):
                raise PrepassError(f"{self.filename}:{self.line_of(mt.start())}: unsupported use of "
                                   "[[function_constant]] (only `constant T name [[function_constant(i)]];`)")
            self.edits.add(mt.start(), mt.end(), "")

    def do_literals(self):
        for mt in re.finditer(r"(?<![\w.])(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?[hH]\b", self.m):
            num = mt.group(1) + (mt.group(2) or "")
            if "." not in num and "e" not in num.lower():
                num += ".0"
            self.edits.add(mt.start(), mt.end(), num + "f16")

    def run(self) -> str:
        depths = brace_depths(self.m)
        self.do_instantiations()
        self.do_kernels()
        self.do_address_space_overloads()
        self.do_vector_direct_init(depths)
        self.do_function_constants()
        self.do_threadgroup_locals(depths)
        self.do_local_constants(depths)
        self.do_attributes()
        self.do_literals()
        self.do_vectors()
        fname = self.filename.replace("\\", "/").replace('"', "")
        return f'#line 1 "{fname}"\n' + self.edits.apply(self.src)


def preprocess(src: str, filename: str = "<metal>") -> tuple[str, dict]:
    p = Prepass(src, filename)
    out = p.run()
    return out, {"kernels": p.kernels, "instances": p.instances}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("-o", "--output", help="output C++ file (default stdout)")
    ap.add_argument("--info", help="write kernel info JSON here")
    args = ap.parse_args(argv)
    with open(args.input) as f:
        src = f.read()
    try:
        out, info = preprocess(src, args.input)
    except PrepassError as e:
        print(f"mtlpp: error: {e}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w") as f:
            f.write(out)
    else:
        sys.stdout.write(out)
    if args.info:
        with open(args.info, "w") as f:
            json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
