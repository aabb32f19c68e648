"""SAM / ASAM wrapper: matches its formula, lowers loss, round-trips its state."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from edge_lung.train.sam import SAM  # noqa: E402


def _quadratic(a: torch.Tensor, b: torch.Tensor):
    def loss(w: torch.Tensor) -> torch.Tensor:
        return 0.5 * w @ a @ w - b @ w

    return loss


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    a = m @ m.T + torch.eye(4, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    w0 = torch.randn(4, generator=g, dtype=torch.float64)
    return a, b, w0


def _sam_step(opt: SAM, w: torch.nn.Parameter, loss_fn) -> None:
    loss_fn(w).backward()
    opt.first_step(zero_grad=True)
    loss_fn(w).backward()
    opt.second_step(zero_grad=True)


@pytest.mark.parametrize("adaptive,rho", [(False, 0.05), (True, 0.5)])
def test_one_step_matches_formula(adaptive: bool, rho: float) -> None:
    a, b, w0 = _problem()
    loss_fn = _quadratic(a, b)
    lr = 0.1
    w = torch.nn.Parameter(w0.clone())
    opt = SAM(torch.optim.SGD([w], lr=lr), rho=rho, adaptive=adaptive)
    _sam_step(opt, w, loss_fn)

    g = a @ w0 - b
    if adaptive:  # ASAM: e = rho * w^2 g / ||w g||
        e = rho * w0 * w0 * g / torch.linalg.vector_norm(w0.abs() * g)
    else:  # SAM: e = rho * g / ||g||
        e = rho * g / torch.linalg.vector_norm(g)
    expected = w0 - lr * (a @ (w0 + e) - b)
    torch.testing.assert_close(w.detach(), expected, rtol=1e-10, atol=1e-12)


def test_closure_step_equals_two_calls() -> None:
    a, b, w0 = _problem(1)
    loss_fn = _quadratic(a, b)
    w1 = torch.nn.Parameter(w0.clone())
    opt1 = SAM(torch.optim.SGD([w1], lr=0.05), rho=0.1)
    _sam_step(opt1, w1, loss_fn)

    w2 = torch.nn.Parameter(w0.clone())
    opt2 = SAM(torch.optim.SGD([w2], lr=0.05), rho=0.1)
    loss_fn(w2).backward()

    def closure() -> torch.Tensor:
        opt2.zero_grad()
        loss = loss_fn(w2)
        loss.backward()
        return loss

    opt2.step(closure)
    torch.testing.assert_close(w1.detach(), w2.detach())


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_lowers_loss(adaptive: bool) -> None:
    a, b, w0 = _problem(2)
    loss_fn = _quadratic(a, b)
    w = torch.nn.Parameter(w0.clone())
    opt = SAM(torch.optim.AdamW([w], lr=0.05, weight_decay=0.0), rho=0.05 if not adaptive else 0.5, adaptive=adaptive)
    start = float(loss_fn(w.detach()))
    for _ in range(200):
        _sam_step(opt, w, loss_fn)
    optimum = float(loss_fn(torch.linalg.solve(a, b)))
    end = float(loss_fn(w.detach()))
    assert end < start
    assert end - optimum < 0.05 * (start - optimum)


def test_state_dict_round_trips_and_shares_param_groups() -> None:
    a, b, w0 = _problem(3)
    loss_fn = _quadratic(a, b)
    w = torch.nn.Parameter(w0.clone())
    opt = SAM(torch.optim.AdamW([w], lr=0.01), rho=0.07)
    for _ in range(3):
        _sam_step(opt, w, loss_fn)
    state = copy.deepcopy(opt.state_dict())  # as if saved to disk: no tensors shared with `opt`
    assert state["param_groups"][0]["rho"] == 0.07

    # The lr set on the wrapper is the base optimizer's (one schedule drives both).
    opt.param_groups[0]["lr"] = 0.02
    assert opt.base_optimizer.param_groups[0]["lr"] == 0.02

    w_copy = torch.nn.Parameter(w.detach().clone())
    opt2 = SAM(torch.optim.AdamW([w_copy], lr=0.5), rho=1.0)
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["rho"] == 0.07 and opt2.param_groups[0]["lr"] == 0.01
    for _ in range(2):
        _sam_step(opt2, w_copy, loss_fn)
    opt.param_groups[0]["lr"] = 0.01
    for _ in range(2):
        _sam_step(opt, w, loss_fn)
    torch.testing.assert_close(w.detach(), w_copy.detach())


def test_bad_input() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        SAM([w], rho=0.05)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rho"):
        SAM(torch.optim.SGD([w], lr=0.1), rho=0.0)
    opt = SAM(torch.optim.SGD([w], lr=0.1))
    with pytest.raises(RuntimeError, match="backward"):
        opt.first_step()
