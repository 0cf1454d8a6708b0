"""The null-space projector against a direct eigendecomposition reference.

pytest tests/test_nullspace.py
"""

import pytest
import torch

from unierase.edit.nullspace import null_space


def _keys(n: int = 500, d: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Keys with a decaying spectrum, as MLP activations have: some directions barely used.
    scales = torch.logspace(1, -3, d, dtype=torch.float64)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) * scales


def test_projector_matches_eigendecomposition_reference():
    K = _keys()
    C = K.T @ K / K.shape[0]
    ns = null_space(C, relative_threshold=2e-2)

    eigvals, eigvecs = torch.linalg.eigh(C)
    cut = 2e-2 * eigvals.mean()
    small = eigvals < cut
    reference = eigvecs[:, small] @ eigvecs[:, small].T

    assert ns.dim == int(small.sum()) > 0
    assert ns.threshold == pytest.approx(float(cut))
    torch.testing.assert_close(ns.projector, reference, atol=1e-10, rtol=0)
    P = ns.projector
    torch.testing.assert_close(P, P.T, atol=1e-12, rtol=0)  # symmetric
    torch.testing.assert_close(P @ P, P, atol=1e-10, rtol=0)  # idempotent
    # The preserved keys' mean squared norm left under P is the sum of the eigenvalues cut off.
    residual = float(((K @ P) ** 2).sum() / K.shape[0])
    assert residual == pytest.approx(float(eigvals[small].sum()), rel=1e-8)
    assert ns.residual_energy == pytest.approx(float(eigvals[small].sum()), rel=1e-8)
    assert ns.total_energy == pytest.approx(float(eigvals.sum()), rel=1e-8)


def test_update_through_projector_leaves_preserved_keys_nearly_alone():
    K0 = _keys(seed=1)
    C = K0.T @ K0 / K0.shape[0]
    P = null_space(C, 2e-2).projector
    delta = torch.randn(8, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    moved_projected = float((K0 @ (delta @ P).T).norm())
    moved_free = float((K0 @ delta.T).norm())
    assert moved_projected < 0.05 * moved_free


def test_threshold_below_every_eigenvalue_is_an_error():
    with pytest.raises(ValueError, match="nullspace_threshold"):
        null_space(torch.eye(4, dtype=torch.float64), relative_threshold=0.5)


def test_non_square_covariance_is_an_error():
    with pytest.raises(ValueError, match="square"):
        null_space(torch.zeros(3, 4), 2e-2)
