"""The compiled workbook on CUDA (float32) agrees with the CPU in float64; skipped without a CUDA device."""

from __future__ import annotations

import pytest
import torch

from xlmnist.compile import compile_workbook

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available())"
)


@pytest.mark.parametrize("sheet", ["linear", "nnet"])
def test_objective_and_gradient_on_cuda_match_cpu(coursebook, sheet):
    cpu = compile_workbook(coursebook, sheet=sheet, dtype=torch.float64, device="cpu")
    gpu = compile_workbook(coursebook, sheet=sheet, dtype=torch.float32, device="cuda")
    assert gpu.fallback_reason is None, gpu.fallback_reason  # the lowered program runs on the GPU too
    pc = [p.clone().requires_grad_(True) for p in cpu.initial_params()]
    pg = [p.clone().requires_grad_(True) for p in gpu.initial_params()]
    assert all(p.is_cuda and p.dtype == torch.float32 for p in pg)
    lc, lg = cpu.objective(pc), gpu.objective(pg)
    assert lg.is_cuda
    assert float(lg.detach()) == pytest.approx(float(lc.detach()), rel=1e-4, abs=1e-6)
    lc.backward()
    lg.backward()
    for a, b in zip(pc, pg):
        torch.testing.assert_close(b.grad.cpu().double(), a.grad, rtol=1e-3, atol=1e-5)


def test_train_on_cuda_reaches_the_cpu_loss(coursebook, tmp_path):
    from xlmnist.train.session import train_book

    res = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.xlsx"
        res[device] = train_book(coursebook, sheet="linear", init="zeros", device=device, out=out)
    assert res["cuda"]["device"].startswith("cuda")
    assert res["cuda"]["objective"] == pytest.approx(res["cpu"]["objective"], rel=1e-3)
