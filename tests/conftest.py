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


# ------------------------------------------------------------------ the tiny model, built once


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny random UniGS (task embedding), the torch reference of `tiny_engine`."""
    pytest.importorskip("torch")
    from unigs_deploy import modeling

    return modeling.build("tiny", task_embedding=True, seed=1)


@pytest.fixture(scope="session")
def tiny_engine(tiny_model, tmp_path_factory):
    """`tiny_model` exported and validated: the engine folder. Tests must not modify it (copy it)."""
    from unigs_deploy.export.exporter import export_model

    out = tmp_path_factory.mktemp("tiny-engine")
    export_model(tiny_model, out)
    return out


@pytest.fixture(scope="session")
def tiny_pipe(tiny_engine):
    from unigs_deploy.pipeline import UniGSPipeline

    return UniGSPipeline.from_engine(tiny_engine / "unigs.onnx", threads=1)


RERANKER_GROUPS = {"colour": ["red", "blue"], "kind": ["ellipse", "star", "rectangle"]}


@pytest.fixture(scope="session")
def reranker_engine(tmp_path_factory):
    """A tiny model with a tiny random reranker (RERANKER_GROUPS' words), and its engine folder. Its
    logits are scaled up so that drawings' scores differ by far more than float error: a choice
    between candidates is then the same in every backend."""
    torch = pytest.importorskip("torch")
    from unigs_deploy import modeling
    from unigs_deploy.export.exporter import export_model
    from unigs_deploy.modeling.reranker import Reranker

    model = modeling.build("tiny", task_embedding=True, seed=4)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model.reranker = Reranker(RERANKER_GROUPS, crop=16, width=4).eval()
        with torch.no_grad():
            model.reranker.net[-1].weight *= 1000
    out = tmp_path_factory.mktemp("reranker-engine")
    export_model(model, out)
    return model, out
