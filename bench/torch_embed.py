"""PyTorch CPU reference for bench/run.ts: MobileNetV2 embeddings (torchvision architecture,
random weights - nothing is downloaded; timing does not depend on the values) of the same
decoded images the service embeds, under no_grad, in eval mode.

    python3 bench/torch_embed.py --input images.f32 --count N --size 224 [--batch 16] [--threads 2]
    python3 bench/torch_embed.py --export-onnx model.onnx [--size 224]

The input file holds N x size x size x 3 float32 values (NHWC, as the service decodes them).
After loading it prints `READY {json}`; then every line `run` on stdin embeds all N images
(one timed pass) and prints `MS <milliseconds>`; end of input exits. The parent interleaves
these passes with its own, so both see the same machine state.

With --export-onnx the same network is written as an ONNX graph (NCHW input `images`, output
`embedding`, any batch) by PyTorch's own exporter, and nothing is timed: bench/run.ts runs it on
bare ONNX Runtime as the engine's ceiling for the service's path.
"""
import argparse
import json
import sys
import time

import numpy as np
import torch
from torch import nn


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--input')
    ap.add_argument('--count', type=int)
    ap.add_argument('--export-onnx')
    ap.add_argument('--size', type=int, default=224)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None) if 'weights' in mobilenet_v2.__code__.co_varnames else mobilenet_v2()
    model = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    if args.export_onnx:
        torch.onnx.export(model, torch.zeros(1, 3, args.size, args.size), args.export_onnx, input_names=['images'],
                          output_names=['embedding'], dynamic_axes={'images': {0: 'n'}, 'embedding': {0: 'n'}}, opset_version=13)
        return
    if not args.input or not args.count:
        ap.error('--input and --count are required')
    # Mapped, not read: 1,000 images at 224 are 600 MB. The timed pass includes the NHWC ->
    # NCHW copy of each batch (the service's pass includes its own input packing too).
    raw = np.memmap(args.input, dtype=np.float32, mode='r', shape=(args.count, args.size, args.size, 3))

    def embed():
        with torch.no_grad():
            out = [model(torch.from_numpy(np.array(raw[i:i + args.batch])).permute(0, 3, 1, 2).contiguous())
                   for i in range(0, args.count, args.batch)]
        return torch.cat(out)

    embed()  # warm-up: allocator, oneDNN primitives
    info = f'torch {torch.__version__}, torchvision mobilenet_v2 (random weights), {torch.get_num_threads()} threads, batch {args.batch}'
    print('READY ' + json.dumps({'info': info}), flush=True)
    for line in sys.stdin:
        if line.strip() != 'run':
            continue
        t = time.perf_counter()
        embed()
        print(f'MS {(time.perf_counter() - t) * 1000:.3f}', flush=True)


if __name__ == '__main__':
    main()
