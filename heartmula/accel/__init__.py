"""What makes the models fast on a device, model-agnostic: device layer, graph capture, Triton kernels, streamed reads."""
