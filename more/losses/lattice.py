"""Permutohedral-lattice bilateral filter (Adams, Baek and Davis 2010), vectorised in PyTorch (MORE_SPEC §2.7.1).

The reference's dense energy loss filters with rloss's ``bilateralfilter`` extension, a CPU permutohedral lattice
(Krähenbühl's CRF variant). Its output is not a constant factor of the exact Gaussian sum (about 0.55-0.64 of it on
images, varying with the image and per pixel; bench/RESULTS.md): its kernel is piecewise linear in the barycentric
weights, and the blur only reaches the vertices that exist, namely the d + 1 vertices of every point's simplex. This
module computes the same splat-blur-slice, so that ``loss.energy_filter=lattice`` gives the reference's values on
any device.

Algorithm for features ``f`` (already divided by their bandwidths) in d dimensions:

1. Elevate each f onto the hyperplane ``sum(y) = 0`` of R^(d+1), scaled so that the lattice spacing matches a
   Gaussian of standard deviation 1 (``sqrt(2/3) (d + 1)``, Adams et al. p.6).
2. Find the enclosing simplex: round to the nearest point whose coordinates are multiples of d + 1 (the 0-colored
   vertex), rank the residuals, and fix the rounding so that the coordinates sum to zero.
3. Barycentric weights of the d + 1 simplex vertices; a vertex is identified by its first d coordinates.
4. Splat ``sum_i w_ir v_i`` onto the vertices, blur with ``[1/2, 1, 1/2]`` along each of the d + 1 lattice
   directions in turn (missing neighbours count as zero), slice back with the same weights times
   ``1 / (1 + 2^-d)``, the factor that makes an isolated point in a fully populated lattice map to itself.

The float32 operations follow the extension's (SSE2 build: round half to even; the splat sums each vertex's terms in
point order), so on the CPU the output equals the extension's bit for bit (tests/golden/energy_lattice.pt). On CUDA
``index_add_`` adds with atomics in no fixed order, which changes the last bits from run to run.
"""

from __future__ import annotations

import math

import torch


def _scale_factors(d: int) -> torch.Tensor:
    """Diagonal of the elevation matrix times the inverse standard deviation, rounded to float32 at the end."""
    inv_std_dev = float(torch.tensor(math.sqrt(2.0 / 3.0) * (d + 1), dtype=torch.float32))
    return torch.tensor([1.0 / math.sqrt((i + 2) * (i + 1)) * inv_std_dev for i in range(d)], dtype=torch.float32)


def _simplex(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lattice keys (P, d + 1, d) int64 and barycentric weights (P, d + 1) float32 of the points ``features`` (P, d)."""
    p, d = features.shape
    scale = _scale_factors(d).to(features.device)
    down = torch.tensor(1.0 / (d + 1), dtype=torch.float32)  # the float32 constant the extension multiplies by
    up = float(d + 1)
    # elevation y = E f, accumulated from the last coordinate down as in Adams et al. (p.5)
    elevated = torch.empty(p, d + 1, dtype=torch.float32, device=features.device)
    running = torch.zeros(p, dtype=torch.float32, device=features.device)
    for j in range(d, 0, -1):
        cf = features[:, j - 1] * scale[j - 1]
        elevated[:, j] = running - j * cf
        running = running + cf
    elevated[:, 0] = running
    # nearest 0-colored lattice point; torch.round is half to even like the SSE conversion
    rounded = torch.round(elevated * down)
    rem0 = rounded * up
    total = rounded[:, 0]
    for i in range(1, d + 1):
        total = total + rounded[:, i]  # summed in coordinate order as in the extension
    residual = elevated - rem0
    # rank[i]: how many coordinates j precede i in the sorted residuals, ties broken by index as in the extension
    less = (residual[:, :, None] < residual[:, None, :]).float()  # (P, i, j): residual_i < residual_j
    upper = torch.triu(torch.ones(d + 1, d + 1, dtype=torch.float32, device=features.device), diagonal=1)
    rank = (less * upper).sum(2) + ((1.0 - less) * upper).sum(1)  # i < j: c -> rank_i, 1 - c -> rank_j
    rank = rank + total[:, None]
    wrap = torch.where(rank < 0, up, 0.0) - torch.where(rank >= up, up, 0.0)
    rank = rank + wrap
    rem0 = rem0 + wrap
    # barycentric coordinates (p.10): + v at d - rank, - v at d - rank + 1, then wrap the last onto the first
    v = (elevated - rem0) * down
    position = (d - rank).long()
    bary = torch.zeros(p, d + 2, dtype=torch.float32, device=features.device)
    bary.scatter_add_(1, position, v)
    bary.scatter_add_(1, position + 1, -v)
    bary[:, 0] = bary[:, 0] + (1.0 + bary[:, d + 1])
    # vertex r of the simplex: rem0 + canonical[r][rank], canonical[r][c] = r if c <= d - r else r - (d + 1)
    remainder = torch.arange(d + 1, device=features.device)[None, :, None]  # (1, r, 1)
    rank_i = rank[:, None, :d].long()  # (P, 1, d)
    canonical = torch.where(rank_i <= d - remainder, remainder, remainder - (d + 1))  # (P, d + 1, d)
    keys = rem0[:, None, :d].long() + canonical
    return keys, bary[:, : d + 1]


def _neighbour_steps(d: int) -> torch.Tensor:
    """Key offsets (d + 1, d) to the blur's first neighbour along each lattice direction (the second is minus it).

    Direction j moves by (d + 1) e_j - (1, ..., 1) in R^(d+1); a key holds the first d coordinates only.
    """
    steps = torch.full((d + 1, d), -1, dtype=torch.int64)
    steps[torch.arange(d), torch.arange(d)] = d
    return steps


def _index(
    keys: torch.Tensor, image: torch.Tensor, *, pack_limit: int = 2**62
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, ...]], int]:
    """Vertex ids (P, d + 1) of the simplex vertices, the blur neighbours of every vertex, and the vertex count m.

    A vertex is the pair (image, key), so the images of a batch get separate lattices. Missing neighbours get the id m.
    The fast path packs (image, key) into one int64 (mixed radix with room for the neighbour offsets), so that
    ``unique`` and the neighbour look-up (``searchsorted``) work on 1-D codes; keys too spread out for that fall back
    to ``unique`` over rows (also when the packed codes would reach ``pack_limit``).
    """
    d = keys.shape[-1]
    steps = _neighbour_steps(d).to(keys.device)
    flat = keys.reshape(-1, d)
    low = flat.amin(0) - (d + 1)
    span = flat.amax(0) + (d + 1) - low + 1  # a neighbour differs by at most d per coordinate
    radices = [int(r) for r in span.tolist()] + [int(image.max()) + 1]
    if math.prod(radices) < pack_limit:
        strides = torch.ones(d, dtype=torch.int64, device=keys.device)
        for i in range(d - 2, -1, -1):
            strides[i] = strides[i + 1] * radices[i + 1]
        codes = ((keys - low) * strides).sum(-1) + image[:, None] * (int(strides[0]) * radices[0])  # (P, d + 1)
        vertices, vertex_of = torch.unique(codes.flatten(), sorted=True, return_inverse=True)
        m = vertices.numel()
        neighbours = []
        for shift in (steps * strides).sum(1).tolist():
            pair = []
            for wanted in (vertices + shift, vertices - shift):
                found = torch.searchsorted(vertices, wanted).clamp_(max=m - 1)
                pair.append(torch.where(vertices[found] == wanted, found, m))
            neighbours.append(tuple(pair))
        return vertex_of.view(-1, d + 1), neighbours, m
    rows = torch.cat([image[:, None, None].expand(-1, d + 1, 1), keys], dim=-1).reshape(-1, d + 1)
    vertices, vertex_of = torch.unique(rows, dim=0, sorted=True, return_inverse=True)
    m = vertices.shape[0]
    offsets = torch.cat([torch.zeros(d + 1, 1, dtype=torch.int64, device=keys.device), steps], dim=1)
    wanted = torch.cat([vertices[None] + offsets[:, None], vertices[None] - offsets[:, None]])  # (2(d+1), m, d+1)
    _, ids = torch.unique(torch.cat([vertices, wanted.reshape(-1, d + 1)]), dim=0, return_inverse=True)
    table = torch.full((int(ids.max()) + 1,), m, dtype=torch.int64, device=keys.device)
    table[ids[:m]] = torch.arange(m, device=keys.device)
    found = table[ids[m:]].view(2, d + 1, m)
    return vertex_of.view(-1, d + 1), [(found[0, j], found[1, j]) for j in range(d + 1)], m


def permutohedral_filter(*, features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Unnormalised permutohedral-lattice Gaussian filter of ``maps``, one lattice per image (rloss's values).

    ``out_k(i) ~ sum_j exp(-|f_i - f_j|^2 / 2) maps_k(j)``, approximated as rloss's ``bilateralfilter_batch`` does.

    Args:
        features: per-pixel features already divided by their bandwidths, shape (B, F, H, W)
            (see :func:`more.losses.energy.bilateral_features`).
        maps: the maps to filter, shape (B, K, H, W).

    Returns:
        float32 filtered maps, shape (B, K, H, W). Not differentiable (computed from detached inputs).
    """
    b, k, h, w = maps.shape
    d = features.shape[1]
    with torch.no_grad(), torch.autocast(device_type=maps.device.type, enabled=False):
        points = features.detach().float().flatten(2).transpose(1, 2).reshape(b * h * w, d)  # (P, d)
        values = maps.detach().float().flatten(2).transpose(1, 2).reshape(b * h * w, k)  # (P, K)
        keys, bary = _simplex(points)  # (P, d + 1, d), (P, d + 1)
        image = torch.arange(b, device=maps.device).repeat_interleave(h * w)
        vertex_of, neighbours, m = _index(keys, image)
        # splat; row m stays zero and stands for every missing neighbour
        lattice = torch.zeros(m + 1, k, dtype=torch.float32, device=maps.device)
        # point-major like the extension: on the CPU index_add_ sums each vertex's terms in this order
        lattice.index_add_(0, vertex_of.flatten(), (bary[:, :, None] * values[:, None, :]).flatten(0, 1))
        # blur along the d + 1 lattice directions in turn, [1/2, 1, 1/2] over the two neighbours
        for first, second in neighbours:
            blurred = lattice[:m] + 0.5 * (lattice[first] + lattice[second])
            lattice = torch.cat([blurred, lattice[m:]])
        alpha = torch.tensor(1.0 / (1.0 + 2.0 ** (-d)), dtype=torch.float32)
        weight = bary * alpha  # the SSE build scales the weights, not the values
        out = torch.zeros(b * h * w, k, dtype=torch.float32, device=maps.device)
        for r in range(d + 1):
            out = out + weight[:, r, None] * lattice[vertex_of[:, r]]
    return out.view(b, h * w, k).transpose(1, 2).reshape(b, k, h, w)
