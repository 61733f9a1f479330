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

@ffi.def_extern()
def unigs_required_size(kind, width, height):
    return capi.required_size(kind, width, height)

@ffi.def_extern()
def unigs_open(path, options):
    box = []
    code = capi.guard(0, lambda: box.append(capi.open_engine(ffi, path, options)))
    return ffi.cast("unigs_t *", box[0]) if code == 0 else ffi.NULL

@ffi.def_extern()
def unigs_close(handle):
    capi.close(_hid(handle))

@ffi.def_extern()
def unigs_last_error(handle):
    msg = capi.last_error(_hid(handle))
    key = (_hid(handle), capi.threading.get_ident())
    _messages[key] = ffi.new("char[]", msg)
    return _messages[key]

@ffi.def_extern()
def unigs_decode_colormap(cm, w, h, stride, params, out, size, n):
    return capi.guard(0, capi.decode, ffi, cm, w, h, stride, params, out, size, n)

@ffi.def_extern()
def unigs_segment(handle, rgb, w, h, stride, params, out, size, n):
    return _call(handle, capi.segment, rgb, w, h, stride, params, out, size, n)

@ffi.def_extern()
def unigs_refer(handle, rgb, w, h, stride, mask, mask_stride, prompt, params, out, size):
    return _call(handle, capi.refer, rgb, w, h, stride, mask, mask_stride, prompt, params, out, size)

@ffi.def_extern()
def unigs_inpaint(handle, rgb, w, h, stride, masks, mask_stride, prompts, n, params, io_, is_, co, cs, lo, ls):
    return _call(handle, capi.inpaint, rgb, w, h, stride, masks, mask_stride, prompts, n, params,
                 io_, is_, co, cs, lo, ls)

@ffi.def_extern()
def unigs_synthesize(handle, cm, w, h, stride, prompt, params, out, size):
    return _call(handle, capi.synthesize, cm, w, h, stride, prompt, params, out, size)
'''


def build(out: Path) -> Path:
    import cffi

    types, funcs = _declarations()
    ffi = cffi.FFI()
    ffi.cdef(types)
    ffi.embedding_api(funcs)
    ffi.set_source("_unigs_cffi", '#include "unigs.h"', include_dirs=[str(HERE)])
    sitedirs = site.getsitepackages() + [str(HERE.parent)]
    ffi.embedding_init_code(INIT.format(sitedirs=sitedirs))
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
        "Version: 0.1.0\n"
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
