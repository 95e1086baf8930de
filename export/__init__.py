"""torch -> ONNX per component, graph checks and the export parity check. Needs torch and onnx."""
