"""PyTorch side of bench/train: the same networks (tests/nn/torch_net.py), batch, threads.
usage: train_torch.py THREADS BATCH STEPS SPEC...   prints one line per network:
SPEC train_img_s infer_img_s peak_rss_kb"""
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "nn"))
import torch  # noqa: E402
import torch_net  # noqa: E402

threads, batch, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
for spec in sys.argv[4:]:
    net = torch_net.Net(torch_net.PRESETS[spec], 1, 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    net.train()
    step()
    best = 1e9
    for _ in range(steps):
        t = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - t)
    net.eval()
    with torch.no_grad():
        net(x)
        bi = 1e9
        for _ in range(steps):
            t = time.perf_counter()
            net(x)
            bi = min(bi, time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print("%s %.1f %.1f %d" % (spec, batch / best, batch / bi, rss), flush=True)
