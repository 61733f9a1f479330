"""The lean runtime must import and work with torch unimportable."""

import pkgutil
import subprocess
import sys

import unigs_deploy

# torch-side modules and subpackages: everything else is the runtime
TORCH_SIDE = {"unigs_deploy.modeling", "unigs_deploy.export", "unigs_deploy.training", "unigs_deploy.benchmarks"}


def runtime_modules():
    mods = ["unigs_deploy"]
    for m in pkgutil.walk_packages(unigs_deploy.__path__, "unigs_deploy."):
        if not any(m.name == t or m.name.startswith(t + ".") for t in TORCH_SIDE):
            mods.append(m.name)
    return mods


def test_runtime_imports_and_decodes_without_torch():
    mods = runtime_modules()
    assert "unigs_deploy.dichotomy" in mods and "unigs_deploy.palette" in mods
    code = (
        "import sys, importlib\n"
        "sys.modules['torch'] = None\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "import numpy as np\n"
        "from unigs_deploy import palette, dichotomy\n"
        "m = np.zeros((2, 32, 32), bool); m[0, :8] = True; m[1, 20:] = True\n"
        "assert dichotomy.decode_colormap(palette.encode_colormap(m)).max() == 2\n"
        "assert 'torch' not in {k for k, v in sys.modules.items() if v is not None}\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
