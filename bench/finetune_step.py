"""PyTorch CPU reference for bench/finetune-step.ts: one SGD fine-tuning step of MobileNetV2
(torchvision architecture, random weights - nothing can be downloaded here) at 224x224 with a
10-class linear head, the same layers trainable as the tfjs "top N Keras layers", BatchNorm in
inference mode (as in the tfjs bench). Prints one line `RESULT {json}`.

    python3 bench/finetune_step.py [--batch 8] [--tops 10,20,all] [--steps 3] [--threads 2]

Keras layer counts map onto torchvision modules as follows (the Keras model ends
... block_16_{expand,depthwise,project}[_BN/_relu], Conv_1, Conv_1_bn, out_relu, pool, flatten):
  top 5  = Conv_1 + BN                  -> features[18]
  top 10 = + block_16 depthwise/project -> + features[17].conv[1:]
  top 20 = + block_16 expand, block_15 depthwise/project -> + features[17], features[16].conv[1:]
  all    = every parameter
"""
import argparse
import json
import time

import torch
from torch import nn


def build(tops: str):
    try:
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2(weights=None) if 'weights' in mobilenet_v2.__code__.co_varnames else mobilenet_v2()
        source = 'torchvision mobilenet_v2 (random weights)'
    except ImportError as exc:  # pragma: no cover - torchvision missing
        raise SystemExit(f'torchvision is required: {exc}')
    base = net.features
    head = nn.Linear(1280, 10)
    for p in base.parameters():
        p.requires_grad_(tops == 'all')
    trainable = []
    if tops != 'all':
        n = int(tops)
        if n >= 5:
            trainable.append(base[18])
        if n >= 10:
            trainable.extend(base[17].conv[1:])
        if n >= 20:
            trainable.append(base[17].conv[0])
            trainable.extend(base[16].conv[1:])
        for m in trainable:
            for p in m.parameters():
                p.requires_grad_(True)
    model = nn.Sequential(base, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    model.eval()  # BatchNorm with running statistics
    return model, source


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--batch', type=int, default=8)
    ap.add_argument('--tops', default='10,20,all')
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 224, 224)
    y = torch.arange(args.batch) % 10
    results = {}
    source = ''
    for tops in args.tops.split(','):
        model, source = build(tops)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.01)
        loss_fn = nn.CrossEntropyLoss()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss.item()

        t = time.perf_counter()
        step()
        first = (time.perf_counter() - t) * 1000
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1000)
        results[tops] = {'first_step_ms': first, 'step_ms': times, 'trainable_tensors': len(params)}
    info = f'torch {torch.__version__}, {source}, {torch.get_num_threads()} threads'
    print('RESULT ' + json.dumps({'info': info, 'results': results}))


if __name__ == '__main__':
    main()
