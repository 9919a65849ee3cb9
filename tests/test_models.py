"""Models: shapes, parameter counts, registry, permutation invariance, batch independence."""

from __future__ import annotations

import pytest
import torch

from andersonn.errors import ConfigError
from andersonn.models import (
    MODELS,
    build_model,
    count_parameters,
    explicit_width_for,
)

torch.set_num_threads(1)
SHAPE = {"in_channels": 5, "height": 7, "width": 6, "num_classes": 3}


def _deq(**kw: object) -> torch.nn.Module:
    opts = {"solver_options": {"tol": 1e-6, "max_iter": 60}}
    return build_model("deq", hidden=16, **{**SHAPE, **opts, **kw})


def test_registry_and_shapes() -> None:
    assert set(MODELS) == {"deq", "explicit"}
    x = torch.randn(4, 5, 7, 6)
    for name in MODELS:
        torch.manual_seed(0)
        model = build_model(name, hidden=16, **SHAPE)
        assert model(x).shape == (4, 3)
        assert count_parameters(model) > 0


def test_unknown_model_and_missing_shape() -> None:
    with pytest.raises(ConfigError):
        build_model("resnet", **SHAPE)
    with pytest.raises(ConfigError):
        build_model("deq", in_channels=3)


def test_explicit_has_depth_times_cell_params() -> None:
    deq = build_model("deq", hidden=16, **SHAPE)
    one = build_model("explicit", hidden=16, depth=1, **SHAPE)
    four = build_model("explicit", hidden=16, depth=4, **SHAPE)
    # the DEQ and a one-cell explicit net have the same weights
    assert count_parameters(deq) == count_parameters(one)
    cell = count_parameters(deq.cell)
    assert count_parameters(four) - count_parameters(one) == 3 * cell


def test_explicit_width_matches_deq_params() -> None:
    deq = build_model("deq", hidden=48, **SHAPE)
    target = count_parameters(deq)
    width = explicit_width_for(target, depth=6, in_channels=5, width=6, num_classes=3)
    assert width < 48
    matched = build_model("explicit", depth=6, match_params=target, **SHAPE)
    assert matched.hidden == width
    assert abs(count_parameters(matched) - target) / target < 0.15


def test_hparams_rebuild_same_state_dict() -> None:
    for name in MODELS:
        model = build_model(name, hidden=8, **SHAPE)
        hp = dict(model.hparams)
        again = build_model(hp.pop("name"), **hp)
        again.load_state_dict(model.state_dict())
        assert count_parameters(again) == count_parameters(model)
        assert sorted(model.state_dict()) == sorted(again.state_dict())


def test_deq_solver_stats_and_switch() -> None:
    torch.manual_seed(0)
    model = _deq().eval()
    x = torch.randn(3, 5, 7, 6)
    with torch.no_grad():
        y_and = model(x)
    stats = model.solver_stats()["forward"]
    assert stats is not None and stats.nfev.shape == (3,)
    model.set_solver("forward", {"tol": 1e-6, "max_iter": 200})
    with torch.no_grad():
        y_fwd = model(x)
    assert model.solver_name == "forward"
    assert torch.allclose(y_and, y_fwd, atol=1e-3)


def test_permutation_of_atoms_and_batch_independence() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 5, 7, 6)
    perm = torch.randperm(7)
    for model in (_deq().eval(), build_model("explicit", hidden=16, depth=3, **SHAPE).eval()):
        with torch.no_grad():
            y = model(x)
            y_perm = model(x[:, :, perm])
            y_single = model(x[1:2])
        assert torch.allclose(y, y_perm, atol=1e-3)
        assert torch.allclose(y[1:2], y_single, atol=1e-3)


def test_normalization_buffers_saved() -> None:
    model = build_model("explicit", hidden=8, **SHAPE)
    model.set_normalization(torch.arange(5.0), torch.full((5,), 2.0))
    state = model.state_dict()
    assert torch.equal(state["in_mean"], torch.arange(5.0))
    assert torch.equal(state["in_std"], torch.full((5,), 2.0))


def test_deq_gradients_reach_cell() -> None:
    torch.manual_seed(0)
    model = build_model("deq", hidden=8, **SHAPE)
    model.train()
    loss = model(torch.randn(4, 5, 7, 6)).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.cell.conv1.conv.weight.grad.abs().sum() > 0


def _framed_images(n: int = 3, c: int = 6, h: int = 9, w: int = 4, atoms: int = 7
                   ) -> torch.Tensor:
    """Random images whose channels 1..3 hold per-atom frame coordinates (same in every slot),
    with zero padding rows below ``atoms``."""
    torch.manual_seed(3)
    x = torch.randn(n, c, h, w)
    x[:, 1:4] = x[:, 1:4, :, :1].expand(-1, -1, -1, w)
    x[:, :, atoms:] = 0
    return x


def test_vector_readout_is_a_charge_weighted_sum_and_invariant() -> None:
    model = build_model("deq", in_channels=6, height=9, width=4, num_classes=2, hidden=8,
                        vector_channels=[1, 2, 3], vector_heads=2).eval()
    x = _framed_images()
    with torch.no_grad():
        xn = model.normalize(x)
        z = model.out_norm(model.body(model.embed(xn)))
        got = model.vector_norms(z, xn, x)
        # reference: explicit per-atom charges from the head, summed with the coordinates
        q = model.charge_head(torch.cat([z.mean(3), xn.mean(3)], 1).transpose(1, 2))
        want = torch.stack([(q[b, :, :, None] * x[b, 1:4, :, 0].T[:, None, :]).sum(0).norm(dim=-1)
                            for b in range(x.shape[0])])
        assert torch.allclose(got, want, atol=1e-4)
        # a rotation/reflection of the frame leaves the norms unchanged
        rot, _ = torch.linalg.qr(torch.randn(3, 3))
        turned = x.clone()
        turned[:, 1:4] = torch.einsum("uv,bvhw->buhw", rot, x[:, 1:4])
        assert torch.allclose(model.vector_norms(z, xn, turned), got, atol=1e-5)
        # atom order does not matter for the logits
        perm = torch.randperm(7)
        shuffled = x.clone()
        shuffled[:, :, :7] = x[:, :, perm]
        assert torch.allclose(model(shuffled), model(x), atol=1e-4)
    rebuilt = build_model(**model.hparams)
    assert rebuilt.vector_channels == [1, 2, 3] and rebuilt.vector_heads == 2


def test_vector_channels_found_by_name_and_validated() -> None:
    from andersonn.models import FRAME_CHANNELS, vector_channels_for

    names = ["atom_en", *reversed(FRAME_CHANNELS), "g_dipole"]
    assert vector_channels_for(names) == [3, 2, 1]
    assert vector_channels_for(["atom_en", "atom_frame_y"]) == []
    assert vector_channels_for(None) == []
    with pytest.raises(ValueError, match="vector_channels"):
        build_model("deq", in_channels=3, height=4, width=2, num_classes=2,
                    vector_channels=[0, 1, 5], vector_heads=2)
    plain = build_model("deq", in_channels=3, height=4, width=2, num_classes=2,
                        vector_channels=[], vector_heads=4)
    assert plain.vector_heads == 0 and not hasattr(plain, "charge_head")
