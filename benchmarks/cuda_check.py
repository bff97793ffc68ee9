"""On a machine with a GPU: the watch's recorded norms on CUDA against clip_grad_norm_, and the
stepper's cost per node on CUDA chains (python benchmarks/cuda_check.py). Not run by CI."""
import os, sqlite3, tempfile, time
import torch, gradviz
from gradviz import BackwardStepper

dev = "cuda"
print(torch.__version__, torch.cuda.get_device_name(0))
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 10)).to(dev)
opt = torch.optim.AdamW(m.parameters(), 1e-3)
path = os.path.join(tempfile.mkdtemp(), "run.db")
norms = []
with gradviz.watch(m, opt, record=path):
    for i in range(20):
        x = torch.randn(32, 64, device=dev); y = torch.randint(0, 10, (32,), device=dev)
        loss = torch.nn.functional.cross_entropy(m(x), y)
        opt.zero_grad(); loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(m.parameters(), 0.5)))
        opt.step()
rows = sqlite3.connect(path).execute(
    "select grad_norm, grad_norm_clipped from iterations order by iteration").fetchall()
rel = max(abs(r[0] - n) / n for r, n in zip(rows, norms))
print(f"watch on cuda: {len(rows)} iterations, grad_norm max rel diff {rel:.2e}, "
      f"clipped {rows[0][1]:.4f} (clip 0.5)")

def chain(n):
    w = torch.randn(256, 256, device=dev, requires_grad=True)
    h = torch.randn(64, 256, device=dev)
    for _ in range(n):
        h = torch.tanh(h @ w)
    return h.sum(), w

for n in (100, 1000):
    best_plain = best_step = 1e9
    for _ in range(5):
        loss, w = chain(n); torch.cuda.synchronize(); t = time.perf_counter()
        loss.backward(); torch.cuda.synchronize(); best_plain = min(best_plain, time.perf_counter() - t)
        loss, w = chain(n); torch.cuda.synchronize(); t = time.perf_counter()
        with BackwardStepper(loss) as s:
            s.run()
        torch.cuda.synchronize(); best_step = min(best_step, time.perf_counter() - t)
        nodes = len(s.events)
    print(f"chain {n} on cuda: plain {best_plain*1e3:.2f} ms, stepper {best_step*1e3:.2f} ms "
          f"({nodes} nodes, {(best_step-best_plain)/nodes*1e6:.1f} us/node over plain)")
