"""LIB on a toy network whose highest-variance input direction is invisible downstream."""
import pytest
import torch

from actlab.dictionary.lib import interaction_graph, lib


def toy(linear: bool, n=2000, seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([10.0, 1.0, 0.8, 0.5, 0.3], dtype=torch.float64)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64) * scales                 # e0 has the most variance
    W1 = torch.randn(6, 5, generator=g, dtype=torch.float64)
    W1[:, 0] = 0                                                                    # ... but W1 ignores it
    W2 = torch.randn(4, 6, generator=g, dtype=torch.float64)
    act = (lambda h: h) if linear else torch.relu
    maps = [lambda v: act(W1 @ v), lambda v: W2 @ v]
    h = act(x @ W1.t())
    return x, [x, h, h @ W2.t()], maps, W1, W2


@pytest.mark.parametrize("linear", [True, False])
def test_irrelevant_high_variance_direction_is_dropped(linear):
    x, acts, maps, _, _ = toy(linear)
    layers = lib(acts, maps)
    G = x.t() @ x / x.shape[0]
    top_pca = torch.linalg.eigh(G).eigenvectors[:, -1]
    assert abs(float(top_pca[0])) > 0.99                         # PCA's top direction is the irrelevant e0
    C0 = layers[0].C
    assert C0.shape[0] == 4                                      # e0 had Lambda ~ 0 and was dropped
    # the kept LIB coordinates do not read e0 (in whitened units, C0 = L V^T D^-1/2 U^T)
    assert float(C0[:, 0].abs().max()) < 1e-6 * float(C0.abs().max())


def test_linear_lib_directions_are_right_singular_vectors():
    x, acts, maps, W1, W2 = toy(True)
    layers = lib(acts, maps)
    G = x.t() @ x / x.shape[0]
    D, U = torch.linalg.eigh(G)
    D, U = D.flip(0), U.flip(1)
    A = layers[1].C @ W1 @ (U * D.sqrt())                       # whitened downstream map of layer 0
    _, S, Vh = torch.linalg.svd(A)
    lib_dirs = layers[0].C @ (U * D.sqrt())                     # = sqrt(Lambda) V^T in whitened coordinates
    lib_dirs = torch.nn.functional.normalize(lib_dirs, dim=1)
    for i in range(lib_dirs.shape[0]):
        assert abs(float(lib_dirs[i] @ Vh[i])) > 1 - 1e-6
    assert torch.allclose(layers[0].importance.sqrt(), S[: lib_dirs.shape[0]], rtol=1e-6)


def test_ablation_not_worse_than_pca_and_graph_shape():
    x, acts, maps, W1, W2 = toy(False)
    layers = lib(acts, maps)
    y = acts[2]

    def loss_after_projection(P):                                # keep the row space of P at layer 0
        Q = torch.linalg.pinv(P) @ P
        xp = x @ Q.t()
        return float((torch.relu(xp @ W1.t()) @ W2.t() - y).pow(2).mean())

    C0 = layers[0].C
    G = x.t() @ x / x.shape[0]
    D, U = torch.linalg.eigh(G)
    U = U.flip(1)
    for k in (1, 2):
        lib_loss = loss_after_projection(C0[: C0.shape[0] - k])
        pca_loss = loss_after_projection(U[:, : 5 - k].t())
        assert lib_loss <= pca_loss + 1e-9
    E = interaction_graph(layers, acts, maps, 0)
    assert E.shape == (layers[0].C.shape[0], layers[1].C.shape[0]) and bool((E >= 0).all())
    with pytest.raises(ValueError, match="len\\(maps\\)"):
        lib(acts, maps[:1])
