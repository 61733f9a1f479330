import numpy as np
import pytest


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


HAS_TRT = _has_tensorrt()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="tensorrt does not import here (needs TensorRT and an NVIDIA GPU)")
    for item in items:
        if "trt" in item.keywords and not HAS_TRT:
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
