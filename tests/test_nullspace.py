"""The null-space projector against an independent reference: the SVD of the covariance, as AlphaEdit
takes it, cut at the documented rule (singular values below ``relative_threshold`` times their mean),
and, on a spectrum built by hand, the exact projector onto the directions given small eigenvalues.

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


def _svd_reference(
    cov: torch.Tensor, relative_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """AlphaEdit's construction: ``U, S, _ = svd(C)``, keep the columns of ``U`` whose singular value
    is below the cut. Returns the projector, the mask of kept singular values, the singular values
    and the cut."""
    U, S, _ = torch.linalg.svd(cov)
    cut = relative_threshold * float(S.mean())
    small = S < cut
    return U[:, small] @ U[:, small].T, small, S, cut


def _known_spectrum(d: int = 32, rank: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A low-rank-plus-noise covariance ``C = Q diag(λ) Qᵀ`` with ``rank`` eigenvalues in [1, 10] (the
    directions the preserved keys use) and ``d - rank`` in [1e-6, 1e-4] (noise). At a relative cut of
    2e-2 the cut lies near 0.04: 24 times below the smallest used eigenvalue, 400 times above the
    largest noise one. Returns C, the used basis, the unused basis."""
    gen = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    large = torch.linspace(1.0, 10.0, rank, dtype=torch.float64)
    noise = torch.logspace(-6, -4, d - rank, dtype=torch.float64)
    cov = Q @ torch.diag(torch.cat([large, noise])) @ Q.T
    return (cov + cov.T) / 2, Q[:, :rank], Q[:, rank:]


def test_projector_matches_svd_reference():
    K = _keys()
    C = K.T @ K / K.shape[0]
    ns = null_space(C, relative_threshold=2e-2)

    reference, small, S, cut = _svd_reference(C, 2e-2)

    assert ns.dim == int(small.sum()) > 0
    assert ns.threshold == pytest.approx(cut)
    torch.testing.assert_close(ns.projector, reference, atol=1e-10, rtol=0)
    P = ns.projector
    torch.testing.assert_close(P, P.T, atol=1e-12, rtol=0)  # symmetric
    torch.testing.assert_close(P @ P, P, atol=1e-10, rtol=0)  # idempotent
    # The preserved keys' mean squared norm left under P is the sum of the singular values cut off.
    residual = float(((K @ P) ** 2).sum() / K.shape[0])
    assert residual == pytest.approx(float(S[small].sum()), rel=1e-8)
    assert ns.residual_energy == pytest.approx(float(S[small].sum()), rel=1e-8)
    assert ns.total_energy == pytest.approx(float(torch.trace(C)), rel=1e-8)


def test_known_spectrum_cut_projector_and_its_properties():
    C, used, unused = _known_spectrum()
    d, rank = C.shape[0], used.shape[1]
    ns = null_space(C, relative_threshold=2e-2)
    P = ns.projector
    reference, small, S, cut = _svd_reference(C, 2e-2)

    # The cut falls in the gap: exactly the noise directions are below it.
    assert S[rank - 1] > 10 * cut > 100 * S[rank]
    assert ns.dim == int(small.sum()) == d - rank
    assert ns.threshold == pytest.approx(2e-2 * float(torch.trace(C)) / d)
    torch.testing.assert_close(P, reference, atol=1e-10, rtol=0)  # AlphaEdit's SVD construction
    torch.testing.assert_close(P, unused @ unused.T, atol=1e-10, rtol=0)  # the exact answer
    torch.testing.assert_close(P, P.T, atol=1e-12, rtol=0)
    torch.testing.assert_close(P @ P, P, atol=1e-10, rtol=0)
    assert int(torch.linalg.matrix_rank(P)) == d - rank
    assert float(torch.trace(P)) == pytest.approx(d - rank, abs=1e-9)
    assert ns.residual_energy == pytest.approx(float(S[small].sum()), rel=1e-8)

    gen = torch.Generator().manual_seed(1)
    covered = used @ torch.randn(rank, 50, generator=gen, dtype=torch.float64)  # keys in the used directions
    ratio = (P @ covered).norm(dim=0) / covered.norm(dim=0)
    assert float(ratio.max()) < 1e-9  # annihilated
    free = unused @ torch.randn(d - rank, 50, generator=gen, dtype=torch.float64)  # vectors in the null space
    torch.testing.assert_close(P @ free, free, atol=1e-10, rtol=0)  # left unchanged
    mixed = covered[:, :1] + free[:, :1]
    torch.testing.assert_close(P @ mixed, free[:, :1], atol=1e-10, rtol=0)  # keeps only the null-space part


def test_sampled_low_rank_keys_are_annihilated():
    """Preserved keys drawn from an 8-dimensional subspace plus small noise: the projector removes all
    but the noise of every key, and the update it allows leaves them nearly alone."""
    gen = torch.Generator().manual_seed(3)
    d, rank, n, noise = 32, 8, 400, 1e-3
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    scales = torch.linspace(1.0, 4.0, rank, dtype=torch.float64)
    K = torch.randn(n, rank, generator=gen, dtype=torch.float64) * scales @ Q[:, :rank].T
    K = K + noise * torch.randn(n, d, generator=gen, dtype=torch.float64)
    C = K.T @ K / n
    ns = null_space(C, relative_threshold=2e-2)
    reference, small, S, cut = _svd_reference(C, 2e-2)

    assert S[rank - 1] > 10 * cut > 100 * S[rank]  # an unambiguous cut
    assert ns.dim == int(small.sum()) == d - rank
    torch.testing.assert_close(ns.projector, reference, atol=1e-10, rtol=0)
    ratio = (K @ ns.projector).norm(dim=1) / K.norm(dim=1)
    assert float(ratio.max()) < 10 * noise  # only the noise is left of each key
    # The null space is the complement of the keys' subspace, up to the noise's tilt (6e-4 measured).
    assert float((ns.projector - Q[:, rank:] @ Q[:, rank:].T).norm()) < 5e-3


def test_keys_spanning_every_direction_leave_no_null_space():
    # Isotropic keys: every eigenvalue near the mean, none below 2e-2 of it, so no direction is free.
    K = torch.randn(500, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with pytest.raises(ValueError, match="nullspace_threshold"):
        null_space(K.T @ K / K.shape[0], relative_threshold=2e-2)


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
