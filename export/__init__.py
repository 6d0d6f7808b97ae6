"""Export to TFLite and ONNX behind a parity gate, and the torch-free on-device runtime.

    graph_io.py     the graphs' tensor names, shapes and cache layout     - no torch
    graphs.py       the static-shape encoder and decoder-step graphs both exporters trace
    to_tflite.py    litert-torch conversion, ai-edge-quantizer recipes, builtin-op check
    to_onnx.py      torch.onnx conversion, onnxruntime quantization, op-domain check
    calibration.py  real inputs for static int8
    parity.py       the gate: logits, top-1 agreement and BLEU against PyTorch
    manifest.py     the self-describing model folder (checksums)         - no torch
    runtime.py      the on-device translator (numpy + interpreter)        - no torch
    stage.py        `lite export RUN`: build, gate, publish, artifacts.json

Importing this package imports nothing heavy: the runtime must load where torch does not exist.
"""
