"""Build libunigs.so: cffi's embedding mode (the C entry points start an embedded CPython on
first use and call unigs_deploy.capi). Usage: python capi/build.py [--out build/capi]

Why cffi embedding: cffi generates and compiles the C shims from unigs.h itself, so the
header stays the single definition of the interface; a hand-written CPython shim would repeat
every signature and its reference counting.
"""

from __future__ import annotations

import argparse
import re
import shutil
import site
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
HEADER = HERE / "unigs.h"


PUBLIC_INT = ["unigs_decode_colormap", "unigs_segment", "unigs_refer", "unigs_inpaint", "unigs_synthesize"]
# plain C: no interpreter needed to ask for the version or fill a struct
C_ONLY = ["unigs_version", "unigs_params_init"]

# cffi returns 0 from an exported function whose embedded interpreter failed to start, and 0 is
# UNIGS_OK: so Python implements `_impl_<name>` returning status + 1, and these C wrappers make
# a 0 from it (no interpreter) an error with a message instead of a silent success.
C_WRAPPERS = r"""
#include <stdio.h>
#include <stdlib.h>
/* The embedded interpreter finds its standard library from the host program's location, which
 * can find the wrong Python (e.g. /usr/lib via /lib): point it at the one this was built with,
 * unless the caller chose another with PYTHONHOME. Runs when the library is loaded. */
__attribute__((constructor)) static void unigs_python_home_(void) { setenv("PYTHONHOME", UNIGS_PYTHON_HOME, 0); }
static const char *unigs_init_failed_ =
    "the embedded Python runtime of libunigs failed to start (its error is on stderr): "
    "is the virtual environment it was built with still there?";
static int unigs_status_(int s) { return s == 0 ? UNIGS_ERR_INTERNAL : s - 1; }
#include <string.h>
const char *unigs_version(void) { return UNIGS_VERSION_STRING; }
void unigs_params_init(unigs_params *p) { if (p) memset(p, 0, sizeof *p); }
"""


def _declarations() -> tuple[str, str]:
    """unigs.h -> (type declarations, function declarations) that cffi's parser reads."""
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.S)
    text = "\n".join(ln for ln in text.splitlines() if not ln.strip().startswith("#"))
    text = text.replace('extern "C" {', "").strip()
    text = re.sub(r"^\}\s*$", "", text, flags=re.M)
    chunks, depth, cur = [], 0, ""
    for ch in text:  # top-level declarations end at a ';' outside braces
        cur += ch
        depth += (ch == "{") - (ch == "}")
        if ch == ";" and depth == 0:
            chunks.append(cur.strip())
            cur = ""
    types = [c for c in chunks if c.startswith("typedef")]
    funcs = [c for c in chunks if not c.startswith("typedef")]
    return "\n".join(types), "\n".join(funcs)


def _wrappers(funcs: str) -> tuple[str, str]:
    """(declarations cffi exports, C source): every public function gets an `_impl_` twin."""
    exported, source = [], [C_WRAPPERS]
    for decl in funcs.split(";"):
        decl = " ".join(decl.split())
        if not decl:
            continue
        name = re.search(r"(unigs_\w+)\s*\(", decl).group(1)
        if name in C_ONLY:
            continue
        params = decl[decl.index("(") + 1 : decl.rindex(")")]
        args = ", ".join(re.search(r"(\w+)\s*$", p.strip()).group(1) for p in params.split(",")) \
            if params.strip() != "void" else ""
        impl = decl.replace(name + "(", "_impl_" + name + "(", 1)
        exported.append(impl + ";")
        ret = decl[: decl.index(name)].strip()
        if name in PUBLIC_INT:
            body = f"return unigs_status_(_impl_{name}({args}));"
        elif name == "unigs_last_error":  # NULL only when the interpreter did not start
            body = f"const char *m = _impl_{name}({args}); return m ? m : unigs_init_failed_;"
        elif ret == "void":
            body = f"_impl_{name}({args});"
        else:
            body = f"return _impl_{name}({args});"
        source.append(f"{decl} {{ {body} }}")
    return "\n".join(exported), "\n".join(source)


INIT = r'''
import site, sys
for p in {sitedirs!r}:
    site.addsitedir(p)
from _unigs_cffi import ffi
import numpy as np
from unigs_deploy import capi

_messages = {{}}

def _hid(handle):
    return int(ffi.cast("intptr_t", handle)) if handle != ffi.NULL else 0

def _call(handle, fn, *args):
    """A model call: a NULL handle is an error of its own, the rest goes through capi.guard."""
    hid = _hid(handle)
    if not hid:
        capi.set_error(0, "handle is NULL: open an engine with unigs_open first")
        return capi.INVALID
    return capi.guard(hid, fn, ffi, hid, *args)

@ffi.def_extern(name="_impl_unigs_required_size")
def unigs_required_size(kind, width, height):
    return capi.required_size(kind, width, height)

@ffi.def_extern(name="_impl_unigs_open")
def unigs_open(path, options):
    box = []
    code = capi.guard(0, lambda: box.append(capi.open_engine(ffi, path, options)))
    return ffi.cast("unigs_t *", box[0]) if code == 0 else ffi.NULL

@ffi.def_extern(name="_impl_unigs_close")
def unigs_close(handle):
    capi.close(_hid(handle))

@ffi.def_extern(name="_impl_unigs_last_error")
def unigs_last_error(handle):
    msg = capi.last_error(_hid(handle))
    key = (_hid(handle), capi.threading.get_ident())
    _messages[key] = ffi.new("char[]", msg)
    return _messages[key]

# the int entry points return status + 1: 0 is what cffi returns when this code never ran
@ffi.def_extern(name="_impl_unigs_decode_colormap")
def unigs_decode_colormap(cm, w, h, stride, params, out, size, n):
    return 1 + capi.guard(0, capi.decode, ffi, cm, w, h, stride, params, out, size, n)

@ffi.def_extern(name="_impl_unigs_segment")
def unigs_segment(handle, rgb, w, h, stride, params, out, size, n):
    return 1 + _call(handle, capi.segment, rgb, w, h, stride, params, out, size, n)

@ffi.def_extern(name="_impl_unigs_refer")
def unigs_refer(handle, rgb, w, h, stride, mask, mask_stride, prompt, params, out, size):
    return 1 + _call(handle, capi.refer, rgb, w, h, stride, mask, mask_stride, prompt, params, out, size)

@ffi.def_extern(name="_impl_unigs_inpaint")
def unigs_inpaint(handle, rgb, w, h, stride, masks, mask_stride, prompts, n, params, io_, is_, co, cs, lo, ls):
    return 1 + _call(handle, capi.inpaint, rgb, w, h, stride, masks, mask_stride, prompts, n, params,
                 io_, is_, co, cs, lo, ls)

@ffi.def_extern(name="_impl_unigs_synthesize")
def unigs_synthesize(handle, cm, w, h, stride, prompt, params, out, size):
    return 1 + _call(handle, capi.synthesize, cm, w, h, stride, prompt, params, out, size)
'''


def _header_version() -> str:
    return re.search(r'#define UNIGS_VERSION_STRING "([^"]+)"', HEADER.read_text()).group(1)


def build(out: Path) -> Path:
    import cffi

    types, funcs = _declarations()
    exported, wrappers = _wrappers(funcs)
    ffi = cffi.FFI()
    ffi.cdef(types)
    ffi.embedding_api(exported)
    libdir = sysconfig.get_config_var("LIBDIR")
    # the rpath pins the libpython this was built with, whatever the caller's environment
    home = '#define UNIGS_PYTHON_HOME "' + sys.base_prefix.replace("\\", "\\\\").replace('"', '\\"') + '"\n'
    ffi.set_source("_unigs_cffi", '#include "unigs.h"\n' + home + exported.replace(";", ";\n") + wrappers,
                   include_dirs=[str(HERE)], library_dirs=[libdir], extra_link_args=[f"-Wl,-rpath,{libdir}"])
    ffi.embedding_init_code(INIT.format(sitedirs=site.getsitepackages() + [str(HERE.parent)]))
    (out / "lib" / "pkgconfig").mkdir(parents=True, exist_ok=True)
    (out / "include").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(ffi.compile(tmpdir=tmp, target="libunigs.*", verbose=False))
        shutil.copy2(built, out / "lib" / "libunigs.so.tmp")
    (out / "lib" / "libunigs.so.tmp").replace(out / "lib" / "libunigs.so")
    shutil.copy2(HEADER, out / "include" / "unigs.h")
    libdir = sysconfig.get_config_var("LIBDIR")
    (out / "lib" / "pkgconfig" / "unigs.pc").write_text(
        f"prefix={out.resolve()}\nlibdir=${{prefix}}/lib\nincludedir=${{prefix}}/include\n\n"
        "Name: unigs\nDescription: UniGS runtime (unified image generation and segmentation)\n"
        f"Version: {_header_version()}\n"
        f"Libs: -L${{libdir}} -Wl,-rpath,${{libdir}} -lunigs -L{libdir} -Wl,-rpath,{libdir}\n"
        "Cflags: -I${includedir}\n")
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("build/capi"))
    args = ap.parse_args()
    path = build(args.out)
    print(f"built {path / 'lib' / 'libunigs.so'}, {path / 'include' / 'unigs.h'}, "
          f"{path / 'lib' / 'pkgconfig' / 'unigs.pc'} (python {sys.version.split()[0]})")
