"""unigs_deploy.export: UniGS to ONNX and TensorRT (torch, diffusers, onnx, polygraphy)."""
