"""Which CPU kernels give the same bits on this machine as on another: a SHA-256 digest of each kernel family's
output on fixed inputs, under portable mode's pins (or the machine's own kernels with --ambient), and of one
whole training recipe (the default profile's clean classifier and SimCLR encoder of seed 0). Run it on two
machines and compare the lines: the first kernel whose digest differs is where their runs part. Run, e.g.:

    python tests/benchmarks/kernel_fingerprint.py [--ambient] [--no-recipes]"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
import warnings


def digest(t) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def kernels() -> dict[str, str]:
    """Each kernel family wmbench's models use, on seeded float32 inputs of the shapes a small CNN sees."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(257, 129, generator=g), torch.randn(129, 65, generator=g)
    x = torch.randn(8, 16, 16, 16, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(32, 16, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
    q, k, v = (torch.randn(4, 2, 17, 32, generator=g) for _ in range(3))
    out = {"matmul (BLAS sgemm)": a @ b,
           "linear + bias": F.linear(a, b.T, torch.randn(65, generator=g)),
           "softmax": torch.softmax(a, 1),
           "layer norm": F.layer_norm(a, (129,)),
           "attention (scaled dot product)": F.scaled_dot_product_attention(q, k, v),
           "QR (LAPACK)": torch.linalg.qr(torch.randn(64, 64, generator=g))[0],
           "sum of 10^6 floats": torch.randn(1_000_000, generator=g).sum()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TF32 acceleration")  # oneDNN's notice about Intel GPUs
        for onednn in (True, False):
            with torch.backends.mkldnn.flags(enabled=onednn):
                xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
                y = F.conv2d(xi, wi, padding=1)
                y.square().sum().backward()
            name = "oneDNN" if onednn else "native"
            out[f"conv2d forward ({name})"], out[f"conv2d input grad ({name})"] = y, xi.grad
            out[f"conv2d weight grad ({name})"] = wi.grad
    return {name: digest(t) for name, t in out.items()}


def recipes() -> dict[str, str]:
    """The default profile's clean classifier and encoder of seed 0, trained in a fresh cache: weight digests."""
    from bench.cache import weights_digest
    from bench.config import RunConfig
    from bench.runner import workbench

    with tempfile.TemporaryDirectory() as cache:
        wb = workbench(RunConfig(workers=1, portable=True, cache=cache))
        return {f"{kind} recipe, seed 0 (weights)": weights_digest(wb.context(kind, 0).base_model())[:16]
                for kind in ("classifier", "encoder")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ambient", action="store_true", help="the machine's own kernels instead of the pins")
    parser.add_argument("--no-recipes", action="store_true", help="skip the two training recipes (about a minute)")
    args = parser.parse_args()
    if not args.ambient:
        from bench.portable import pin_kernels

        pin_kernels()  # before torch loads: the pins are read when its kernels are first chosen
    import torch
    from threadpoolctl import threadpool_limits

    from bench.portable import environment

    torch.set_num_threads(1)
    env = environment(not args.ambient)
    print(f"# {env['cpu_model']}; torch {env['torch']}; kernels {env['cpu_capability']}; "
          f"pins {env['kernel_settings']}")
    with threadpool_limits(1):
        found = kernels() | ({} if args.no_recipes else recipes())
    for name, value in found.items():
        print(f"{value}  {name}")


if __name__ == "__main__":
    main()
