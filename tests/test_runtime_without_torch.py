"""The lean runtime must import and work with torch unimportable."""

import pkgutil
import subprocess
import sys

import numpy as np

import unigs_deploy

# torch-side modules and subpackages: everything else is the runtime
TORCH_SIDE = {"unigs_deploy.modeling", "unigs_deploy.export", "unigs_deploy.training", "unigs_deploy.benchmarks"}
# the torch-side stack: none of it may be needed by the runtime
HEAVY = ("torch", "transformers", "diffusers", "accelerate", "onnx", "safetensors")
BLOCK_TORCH = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in HEAVY)


def runtime_modules():
    mods = ["unigs_deploy"]
    for m in pkgutil.walk_packages(unigs_deploy.__path__, "unigs_deploy."):
        if not any(m.name == t or m.name.startswith(t + ".") for t in TORCH_SIDE):
            mods.append(m.name)
    return mods


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True)


def test_no_runtime_module_imports_torch_side_code():
    """Statically, so a lazy import inside a function is caught too."""
    import ast
    from pathlib import Path

    root = Path(unigs_deploy.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
                if node.level and node.module:  # relative: resolve against the package
                    pkg = ".".join(path.relative_to(root.parent).with_suffix("").parts[: -node.level])
                    names = [f"{pkg}.{node.module}"]
                names += [f"{n}.{a.name}" for n in names for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] in HEAVY
                   or any(n == t or n.startswith(t + ".") for t in TORCH_SIDE)]
            if bad:
                offenders.append(f"{path.relative_to(root.parent)}:{node.lineno} {bad[0]}")
    assert not offenders, offenders


def test_runtime_imports_and_decodes_without_torch():
    mods = runtime_modules()
    assert {"unigs_deploy.pipeline", "unigs_deploy.cli", "unigs_deploy.backends.onnxruntime"} <= set(mods)
    out = _python(
        "import importlib\n"
        f"for m in {mods!r}: importlib.import_module(m)\n"
        "import numpy as np\n"
        "from unigs_deploy import palette, dichotomy\n"
        "m = np.zeros((2, 32, 32), bool); m[0, :8] = True; m[1, 20:] = True\n"
        "assert dichotomy.decode_colormap(palette.encode_colormap(m)).max() == 2\n"
        f"assert not set({HEAVY!r}) & {{k for k, v in sys.modules.items() if v is not None}}\n"
        "print('ok')\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_unigs_run_works_without_torch(tiny_engine, tmp_path):
    from unigs_deploy import io
    io.write_image(tmp_path / "img.png", np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    out = _python(
        "from unigs_deploy.cli import main\n"
        f"main(['--engine', {str(tiny_engine / 'unigs.onnx')!r}, '--task', 'segment', '--image', "
        f"{str(tmp_path / 'img.png')!r}, '--steps', '2', '--out', {str(tmp_path / 'o')!r}, '--quiet'], "
        "standalone_mode=False)\n"
        f"assert not set({HEAVY!r}) & {{k for k, v in sys.modules.items() if v is not None}}\n"
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "o" / "labels.png").is_file() and (tmp_path / "o" / "run.json").is_file()
