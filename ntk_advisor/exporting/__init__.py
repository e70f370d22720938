"""export(): a trained run as a merged Hugging Face folder or ONNX with verified parity."""
