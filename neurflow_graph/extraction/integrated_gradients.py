"""Batched integrated gradients from the maps of layer l-1 to many neurons of layer l (eq. 2).

For a target neuron ``a`` (channel of layer l, phi_a = spatial mean) and a patch with layer-(l-1)
maps ``X`` (``(C, *spatial)``), the attribution to channel ``c`` is

    A[a, c] = sum_spatial X[c] * sum_n w_n * d phi_a(alpha_n X) / dX[c]       (zero baseline)

with captum's quadrature (``gausslegendre`` or ``riemann_right``). T(a, s_c, V) of the paper is
the sum of A over the patches of V. :class:`SliceAttributor` computes A for many (target, patch)
pairs at once: one forward per (patch, step) row shared by the ``S`` targets in that row's slots;
per slot one backward serves every row's target in that slot (batched over slots with ``vmap``,
``is_grads_batched``, on CUDA); plus the exact rewrites of :mod:`neurflow_graph.extraction.ig_graph`.

On CPU the per-slot backward passes are branch-aware: a copy's slots are sorted by the boundaries
their targets read (e.g. an inception branch), each slot back-propagates only the boundaries and head
values its targets reach (no zero cotangents through the other branches, no (S, rows, ...) cotangent
or gradient stacks), its gradients go straight into its accumulator, and a one-channel head value
behind a conv enters the head at that conv's input through one weight row per copy. The
one-output-channel transposed convs of all (slot, row) pairs are one batched matmul.
Memory is bounded by ``max_rows`` rows per forward and a byte budget on the per-slot gradients.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from neurflow_graph.extraction import ig_graph
from neurflow_graph.extraction.activations import spatial_means
from neurflow_graph.extraction.ig_graph import AFF, LIN, Boundary, Costs

# Bytes allowed for the per-slot gradient tensors of one chunk (targets x rows x maps).
GRAD_BUDGET_BYTES = 1 << 28


def quadrature(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alphas, weights) of ``steps`` points on (0, 1], float64, as captum defines them."""
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1.0), 0.5 * w
    if method == "riemann_right":
        return np.arange(1, steps + 1, dtype=np.float64) / steps, np.full(steps, 1.0 / steps)
    raise ValueError(f"unknown quadrature {method!r}")


def _restricted_input_grad(module: nn.Module, u: torch.Tensor, channel: int, grad_out: torch.Tensor) -> torch.Tensor:
    """d <grad_out, module(u)[:, channel]> / du using only row ``channel`` of the weight.

    ``u``: ``(n, C_in, *spatial)``; ``grad_out``: ``(n, 1, *spatial_out)`` -> ``(n, C_in, *spatial)``."""
    weight = module.weight[channel:channel + 1]
    if isinstance(module, nn.Linear):
        return grad_out.reshape(-1, 1) @ weight
    dims = u.dim() - 2
    if module.padding_mode == "zeros" and not isinstance(module.padding, str):
        return torch.ops.aten.convolution_backward(
            grad_out, u, weight, None, list(module.stride), list(module.padding), list(module.dilation),
            False, [0] * dims, 1, [True, False, False])[0]
    leaf = u.detach().requires_grad_(True)
    with torch.enable_grad():
        y = module._conv_forward(leaf, weight, None)
        return torch.autograd.grad(y, leaf, grad_out)[0]


def _restricted_input_grads(module: nn.Module, u: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor,
                            grad_out: torch.Tensor) -> torch.Tensor:
    """Pair ``n``: d <grad_out[n], module(u)[rows[n], channels[n]]> / du[rows[n]], from row
    ``channels[n]`` of the weight only: ``(n, C_in, *spatial)``.

    ``u``: ``(R, C_in, *spatial)`` module inputs; ``grad_out``: ``(n, *spatial_out)``. A 1-d/2-d conv is
    one batched matmul of the pairs' flipped weight rows with the unfolded (stride-dilated, padded)
    ``grad_out`` (the transposed conv of one output channel, for all pairs at once); other convs run
    one transposed conv per distinct channel."""
    if isinstance(module, nn.Linear):
        return grad_out.reshape(-1, 1) * module.weight[channels]
    dims = u.dim() - 2
    if dims not in (1, 2) or module.padding_mode != "zeros" or isinstance(module.padding, str):
        out = torch.empty((len(rows), *u.shape[1:]), dtype=u.dtype, device=u.device)
        for channel in torch.unique(channels).tolist():
            sel = (channels == channel).nonzero().squeeze(1)
            out[sel] = _restricted_input_grad(module, u[rows[sel]], int(channel), grad_out[sel].unsqueeze(1))
        return out
    n, c_in, in_sp = len(rows), u.shape[1], list(u.shape[2:])
    kernel, stride = list(module.kernel_size), list(module.stride)
    padding, dilation = list(module.padding), list(module.dilation)
    g = grad_out.reshape(n, 1, *grad_out.shape[1:])
    weight = module.weight[channels]  # (n, C_in, *kernel)
    if dims == 1:
        g, weight = g.unsqueeze(2), weight.unsqueeze(2)
        in_sp, kernel, stride, padding, dilation = [1, *in_sp], [1, *kernel], [1, *stride], [0, *padding], [1, *dilation]
    if any(st > 1 for st in stride):  # the stride as zeros between the gradient's positions
        spread = g.new_zeros((n, 1, *[(o - 1) * st + 1 for o, st in zip(g.shape[2:], stride)]))
        spread[:, :, ::stride[0], ::stride[1]] = g
        g = spread
    pads: list[int] = []
    for length, size, k, p, d in reversed(list(zip(g.shape[2:], in_sp, kernel, padding, dilation))):
        left = d * (k - 1) - p
        pads += [left, size + d * (k - 1) - length - left]  # negative: cropped
    cols = F.unfold(F.pad(g, pads), kernel, dilation=dilation)  # (n, k_h * k_w, H_in * W_in)
    flipped = weight.flip(-1, -2).reshape(n, c_in, -1)
    return torch.bmm(flipped, cols).reshape(n, *u.shape[1:])


def vectorised_vjp(device: torch.device) -> bool:
    """Batch the per-slot backward passes with vmap (``is_grads_batched``) on CUDA; on CPU one
    backward per slot is faster (the legacy vmap falls back to slow loops for pooling, BatchNorm)."""
    return device.type == "cuda"


def _grad(outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor], cotangents: Sequence[torch.Tensor],
          slots: int, vectorised: bool) -> list[torch.Tensor]:
    """VJPs of ``outputs`` w.r.t. ``inputs`` for ``slots`` cotangents ``(slots, *output.shape)`` at
    once -> ``(slots, *input.shape)`` each. An output that *is* one of the inputs contributes its
    cotangent directly."""
    direct: list[torch.Tensor | None] = [None] * len(inputs)
    pairs = []
    for o, c in zip(outputs, cotangents):
        hit = next((i for i, x in enumerate(inputs) if o is x), None)
        if hit is not None:
            direct[hit] = c if direct[hit] is None else direct[hit] + c
        elif o.requires_grad:
            pairs.append((o, c))
    got: list[torch.Tensor | None] = [None] * len(inputs)
    if pairs:
        outs, cots = [p[0] for p in pairs], [p[1] for p in pairs]
        if vectorised and slots > 1:
            got = list(torch.autograd.grad(outs, list(inputs), cots, allow_unused=True, is_grads_batched=True))
        else:
            per_slot = [torch.autograd.grad(outs, list(inputs), [c[s] for c in cots], allow_unused=True,
                                            retain_graph=s < slots - 1) for s in range(slots)]
            got = [None if per_slot[0][i] is None else torch.stack([g[i] for g in per_slot])
                   for i in range(len(inputs))]
    result = []
    for x, g, d in zip(inputs, got, direct):
        if g is None and d is None:
            result.append(torch.zeros((slots, *x.shape), dtype=x.dtype, device=x.device))
        else:
            result.append(g if d is None else (d if g is None else g + d))
    return result


def _vjp(outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor],
         cotangents: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """One VJP (no slot dimension) of ``outputs`` w.r.t. ``inputs``, keeping the graph for the next
    call; None for an input no output depends on. An output that *is* an input passes its cotangent."""
    direct: list[torch.Tensor | None] = [None] * len(inputs)
    outs, cots = [], []
    for o, c in zip(outputs, cotangents):
        hit = next((i for i, x in enumerate(inputs) if o is x), None)
        if hit is not None:
            direct[hit] = c if direct[hit] is None else direct[hit] + c
        elif o.requires_grad:
            outs.append(o)
            cots.append(c)
    got: Sequence[torch.Tensor | None] = [None] * len(inputs)
    if outs:
        got = torch.autograd.grad(outs, list(inputs), cots, allow_unused=True, retain_graph=True)
    return [d if g is None else (g if d is None else g + d) for g, d in zip(got, direct)]


class SliceAttributor:
    """Integrated gradients through one layer slice (``fx.GraphModule``: maps of l-1 -> output of l).

    Call :meth:`prepare` with one example row of maps, then :meth:`attribute` per block."""

    def __init__(self, slice_module: fx.GraphModule, *, grad_budget: float = GRAD_BUDGET_BYTES) -> None:
        self.grad_budget = float(grad_budget)  # bytes of per-slot gradient tensors per chunk / block
        slice_module = ig_graph.fold_batchnorm(slice_module)
        graph = slice_module.graph
        kinds = ig_graph.head_kinds(graph, slice_module)
        head_nodes = {n for n, k in kinds.items() if k in (LIN, AFF)}
        placeholder = next(n for n in graph.nodes if n.op == "placeholder")
        out = ig_graph.output_node(slice_module)
        self.collapsible = out in head_nodes
        frontier = [n for n in graph.nodes if n in head_nodes and any(u not in head_nodes for u in n.users)]
        self.head = ig_graph.subgraph(slice_module, [placeholder], frontier)
        self.tail = ig_graph.subgraph(slice_module, frontier, out)
        self.boundaries: list[Boundary] = []
        self.suffix_size = 0
        self.costs = Costs()
        self.vectorised: bool | None = None  # None: decided by the device (``vectorised_vjp``)
        self._prepared = False

    # ------------------------------------------------------------------ preparation

    def prepare(self, example: torch.Tensor) -> None:
        """Split the tail and estimate costs from shapes of one ``(1, *maps)`` example."""
        if self._prepared:
            return
        device = example.device
        ig_graph.shape_prop(self.head, example)
        with torch.no_grad():
            frontier = self.head(example)
        ig_graph.shape_prop(self.tail, *frontier)
        boundaries, suffix, chan = ig_graph.split_suffix(self.tail)
        tail_inputs = [n for n in self.tail.graph.nodes if n.op == "placeholder"]
        self.boundaries = boundaries
        self.suffix_size = len(suffix)
        self._suffix_nodes = [n for n in self.tail.graph.nodes if n in suffix]
        self._out_node = ig_graph.output_node(self.tail)
        self._chan = {n: torch.as_tensor(c, dtype=torch.long, device=device) for n, c in chan.items()}
        # A tail input read by the suffix: its one-channel cotangents go straight to that input.
        self._direct = [tail_inputs.index(b.node) if (b.module is None and b.node in tail_inputs) else None
                        for b in boundaries]
        # Such a frontier value gets one channel per (slot, copy). When it is (a folded BatchNorm of) a
        # conv/linear, its head backward starts at that module's input, from one weight row per copy:
        # the head returns those inputs too.
        head_out = list(ig_graph.output_args(self.head))
        extra: list[fx.Node] = []
        self._head_rows: dict[int, tuple[nn.Module, torch.Tensor | None, torch.Tensor, int]] = {}
        for b, direct in zip(boundaries, self._direct):
            if direct is None:
                continue
            node, scale = head_out[direct], None
            if (node.op == "call_function" and node.target is ig_graph.channel_affine
                    and all(isinstance(a, fx.Node) and a.op == "get_attr" for a in node.args[1:])):
                scale = ig_graph.fetch_attr(self.head, str(node.args[1].target))
                node = node.args[0]
            module = ig_graph.sliceable(node, self.head) if isinstance(node, fx.Node) else None
            if module is None:
                continue
            if node.args[0] not in extra:
                extra.append(node.args[0])
            self._head_rows[direct] = (module, scale, self._chan[b.node], extra.index(node.args[0]))
        self._n_frontier = len(head_out)
        head_placeholder = next(n for n in self.head.graph.nodes if n.op == "placeholder")
        self._head_run = ig_graph.subgraph(self.head, [head_placeholder], head_out + extra) if extra else self.head
        # A conv/linear read only by the suffix: computed for the target channels only.
        self._restricted = [b.module is not None and all(u in suffix for u in b.node.users) for b in boundaries]
        values = [b.node for b, r, d in zip(boundaries, self._restricted, self._direct) if not r and d is None]
        conv_inputs = [b.node.args[0] for b in boundaries if b.module is not None]
        body_outputs = values + conv_inputs
        computed = ig_graph.ancestors(body_outputs, set(tail_inputs)) if body_outputs else set()
        self._needs = [any(u in computed or u in body_outputs for u in [n, *n.users]) for n in tail_inputs]
        self.body = ig_graph.subgraph(self.tail, tail_inputs, body_outputs) if body_outputs else None
        self._n_values = len(values)
        # Output channels grouped by the set of boundaries they read (one group per inception branch).
        reads = np.stack([np.asarray(chan[b.node]) >= 0 for b in boundaries], axis=1)
        group = np.unique(reads, axis=0, return_inverse=True)[1].reshape(-1)
        self._group = torch.as_tensor(group, dtype=torch.long, device=device)

        def numel(node: fx.Node) -> float:
            shape = ig_graph.node_shape(node)
            return float(np.prod(shape[1:])) if shape is not None and len(shape) > 1 else 1.0

        def full(b: Boundary) -> float:
            return numel(b.node) * ig_graph.module_fan_in(b.node, self.tail)

        out_channels = float(ig_graph.node_shape(self._out_node)[1])
        body_nodes = [n for n in computed if n.op not in ("placeholder", "output")]
        sliced = {b.node for b in boundaries if b.module is not None}
        tail_fwd = ig_graph.flops_per_row(self.tail, body_nodes)
        body_bwd = ig_graph.flops_per_row(self.tail, [n for n in body_nodes if n not in sliced])
        # Per slot, the gathered suffix (forward + diagonal backward) and the one-channel conv work.
        body_bwd += 3.0 * ig_graph.flops_per_row(self.tail, self._suffix_nodes) / out_channels
        for b, r in zip(boundaries, self._restricted):
            channels = float(ig_graph.node_shape(b.node)[1])
            body_bwd += numel(b.node) / channels
            if b.module is not None:
                body_bwd += full(b) / channels * (2.0 if r else 1.0)
        head = ig_graph.flops_per_row(self.head)
        self.costs = Costs(tail_forward=max(tail_fwd, 1.0), body_backward_per_slot=max(body_bwd, 1.0),
                           head_forward=head, head_backward_per_slot=head)
        frontier_numel = sum(float(np.prod(f.shape[1:])) for f in frontier)
        body_input_numel = sum(float(np.prod(f.shape[1:])) for f, need in zip(frontier, self._needs) if need)
        cot_numel = sum(numel(n) for n in values) + sum(numel(n) for n in conv_inputs)
        self._slot_row_bytes = 4.0 * 2.0 * (cot_numel + body_input_numel)
        self._row_bytes = 4.0 * (sum(numel(n) for n in body_nodes) + body_input_numel)
        self._copy_slot_bytes = 4.0 * (frontier_numel + float(np.prod(example.shape[1:])))
        self._copy_bytes = 4.0 * sum(numel(n) for n in self.head.graph.nodes if n.op != "output")
        self._prepared = True

    def steps_needed(self, steps: int) -> int:
        """Quadrature points actually evaluated (1 when the slice is affine along the path)."""
        return 1 if self.collapsible else steps

    def rows_per_chunk(self, slots: int, max_rows: int, budget: float | None = None) -> int:
        per_row = slots * self._slot_row_bytes + self._row_bytes
        budget = self.grad_budget if budget is None else budget
        return int(max(1, min(max_rows, budget // max(per_row, 1.0))))

    def copies_per_block(self, slots: int, max_rows: int, budget: float | None = None) -> int:
        per_copy = slots * self._copy_slot_bytes + self._copy_bytes
        budget = self.grad_budget if budget is None else budget
        return int(max(1, min(max_rows, budget // max(per_copy, 1.0))))

    def slots_fit(self, slots: int, budget: float | None = None) -> bool:
        """Whether one row with ``slots`` targets fits the budget."""
        budget = self.grad_budget if budget is None else budget
        return slots * max(self._slot_row_bytes, self._copy_slot_bytes) <= budget

    # ------------------------------------------------------------------ computation

    def attribute(self, *, maps: torch.Tensor, copy_patch: torch.Tensor, slot_targets: torch.Tensor,
                  alphas: np.ndarray, weights: np.ndarray, max_rows: int) -> torch.Tensor:
        """Attributions ``(B_c, S, C)`` for copies ``i`` (patch ``maps[copy_patch[i]]``) and the
        target channels ``slot_targets[i]`` (``(B_c, S)`` long, -1 = empty slot).

        ``maps``: ``(B, C, *spatial)`` on the model's device; float32 results on that device."""
        if not self._prepared:
            self.prepare(maps[:1])
        device, dtype = maps.device, maps.dtype
        if self.vectorised is None:
            self.vectorised = vectorised_vjp(device)
        slots = int(slot_targets.shape[1])
        # Per copy, slots sorted by the boundaries their target reads (e.g. its inception branch):
        # a slot then holds targets of one branch in most copies, and its backward passes leave the
        # other branches out. Slots are independent, so the order changes nothing but the work.
        key = torch.where(slot_targets >= 0, self._group[slot_targets.clamp(min=0)], int(self._group.max()) + 1)
        perm = torch.sort(key, dim=1, stable=True).indices
        slot_targets = slot_targets.gather(1, perm)
        if self.collapsible:
            alphas, weights = np.ones(1), np.asarray([float(np.sum(weights))])
        n_steps = len(alphas)
        x = maps[copy_patch].detach().clone().requires_grad_(True)
        with torch.enable_grad():
            values = list(self._head_run(x))
        frontier, module_inputs = values[:self._n_frontier], values[self._n_frontier:]
        with torch.no_grad():
            base = self.head(torch.zeros_like(maps[:1]))
        deltas = [f.detach() - b for f, b in zip(frontier, base)]
        acc = [torch.zeros((slots, *f.shape), dtype=dtype, device=device) for f in frontier]
        # Per slot: the accumulators that got a value -> whether only one-channel direct values.
        touched: list[dict[int, bool]] = [{} for _ in range(slots)]
        alpha_t = torch.as_tensor(alphas, dtype=dtype, device=device)
        weight_t = torch.as_tensor(weights, dtype=dtype, device=device)
        chunk = self.rows_per_chunk(slots, max_rows)
        per_group = max(1, chunk // n_steps)
        step_chunk = min(n_steps, chunk)
        n_copies = len(copy_patch)
        for c0 in range(0, n_copies, per_group):
            copies = torch.arange(c0, min(c0 + per_group, n_copies), device=device)
            for s0 in range(0, n_steps, step_chunk):
                s1 = min(s0 + step_chunk, n_steps)
                copy_idx = copies.repeat_interleave(s1 - s0)
                row_alpha = alpha_t[s0:s1].repeat(len(copies))
                row_weights = weight_t[s0:s1].repeat(len(copies))
                self._tail_vjp(deltas, base, copy_idx, row_alpha, row_weights,
                               slot_targets[copy_idx].T.contiguous(), acc, touched)
        attr = self._head_vjp(frontier, module_inputs, x, acc, touched, slot_targets)
        return torch.empty_like(attr).scatter_(1, perm.unsqueeze(2).expand_as(attr), attr)

    def _head_vjp(self, frontier: list[torch.Tensor], module_inputs: list[torch.Tensor], x: torch.Tensor,
                  acc: list[torch.Tensor], touched: list[dict[int, bool]], slot_targets: torch.Tensor) -> torch.Tensor:
        """``x * d/dx <acc[slot], head(x)>`` summed over space: ``(B_c, S, C)``. Per slot, only the
        frontier values with a non-zero accumulator are back-propagated (the head's branches that
        slot's targets do not read are skipped); a one-channel one behind a conv/linear enters at
        that module's input (``module_inputs``) through one weight row per copy."""
        slots = len(touched)
        xd = x.detach()
        if self.vectorised and slots > 1:
            attr = _grad(frontier, [x], acc, slots, True)[0] * xd
            return (attr.flatten(3).sum(3) if attr.dim() > 3 else attr).transpose(0, 1)
        attr = torch.zeros((x.shape[0], slots, x.shape[1]), dtype=x.dtype, device=x.device)
        copies = torch.arange(x.shape[0], device=x.device)
        for s in range(slots):
            outs: list[torch.Tensor] = []
            cots: list[torch.Tensor] = []
            for i, one_channel in sorted(touched[s].items()):
                row = self._head_rows.get(i) if one_channel else None
                if row is None:
                    outs.append(frontier[i])
                    cots.append(acc[i][s])
                    continue
                module, scale, route, k = row
                # A copy whose target reads another boundary has a zero accumulator here: any channel will do.
                ch = route[slot_targets[:, s].clamp(min=0)].clamp(min=0)
                picked = acc[i][s][copies, ch]
                if scale is not None:
                    picked = picked * scale[ch].view(-1, *([1] * (picked.dim() - 1)))
                u = module_inputs[k]
                cot = _restricted_input_grads(module, u.detach(), copies, ch, picked)
                hit = next((j for j, o in enumerate(outs) if o is u), None)
                if hit is None:
                    outs.append(u)
                    cots.append(cot)
                else:
                    cots[hit] = cots[hit] + cot
            g = _vjp(outs, [x], cots)[0] if outs else None
            if g is not None:
                prod = g * xd
                attr[:, s] = prod.flatten(2).sum(2) if prod.dim() > 2 else prod
        return attr

    def _tail_vjp(self, deltas: list[torch.Tensor], base: list[torch.Tensor], copy_idx: torch.Tensor,
                  row_alpha: torch.Tensor, row_weights: torch.Tensor, targets: torch.Tensor,
                  acc: list[torch.Tensor], touched: list[dict[int, bool]]) -> None:
        """Add quadrature weight * d phi_target / dz of every (slot, row) to ``acc[i][slot, copy_idx[row]]``.

        Tail input ``i`` at row ``r`` is ``z = row_alpha[r] * deltas[i][copy_idx[r]] + base[i]``;
        ``targets``: ``(S, R)`` target channels (-1: empty); ``acc``: ``(S, B_c, ...)`` per tail input;
        ``touched[slot][i]``: accumulator ``i`` received a value for that slot (True while only
        one-channel values of a direct boundary)."""
        slots = int(targets.shape[0])
        valid = targets >= 0
        order = torch.unique(targets[valid])  # O: the output channels any slot asks for
        if order.numel() == 0:
            return
        position = torch.full((int(self._chan[self._out_node].numel()),), -1, dtype=torch.long, device=order.device)
        position[order] = torch.arange(order.numel(), device=order.device)
        s_all, r_all = valid.nonzero(as_tuple=True)
        a_all = targets[s_all, r_all]
        o_all = position[a_all]

        def rows_of(t: torch.Tensor) -> torch.Tensor:
            return row_alpha.view(-1, *([1] * (t.dim() - 1))).to(t.dtype)

        z: list[torch.Tensor | None] = []
        for d, b, need in zip(deltas, base, self._needs):
            z.append(torch.addcmul(b, rows_of(d), d[copy_idx]).requires_grad_(True) if need else None)
        outs: list[torch.Tensor] = []
        if self.body is not None:
            with torch.enable_grad():
                outs = list(self.body(*z))
        values, conv_inputs = outs[:self._n_values], outs[self._n_values:]

        # Every boundary's value, gathered to the channels O reads: (R, |O|, ...).
        gathered, kept, k, c = [], [], 0, 0
        for b, restricted, direct in zip(self.boundaries, self._restricted, self._direct):
            idx = self._chan[b.node][order].clamp(min=0)  # unread channels (-1) never reach their output
            if direct is not None:
                d = deltas[direct].index_select(1, idx).index_select(0, copy_idx)
                g = torch.addcmul(base[direct].index_select(1, idx), rows_of(d), d)
                kept.append(None)
            elif restricted:
                u = conv_inputs[c].detach()
                bias = b.module.bias[idx] if b.module.bias is not None else None
                with torch.no_grad():
                    if isinstance(b.module, nn.Linear):
                        g = F.linear(u, b.module.weight[idx], bias)
                    else:
                        g = b.module._conv_forward(u, b.module.weight[idx], bias)
                kept.append(None)
            else:
                value = values[k]
                k += 1
                g = value.detach()[:, idx]
                kept.append(value)
            if b.module is not None:
                c += 1
            gathered.append(g)
        with torch.enable_grad():
            leaves = [g.detach().requires_grad_(True) for g in gathered]
            phi = spatial_means(self._run_suffix(leaves, order))
            diag = torch.autograd.grad((phi * row_weights[:, None].to(phi.dtype)).sum(), leaves, allow_unused=True)

        # Per boundary the (slot, row) pairs whose target reads it and their cotangents: one channel
        # of a value (``ch``), or, through a sliced conv/linear, the whole input of that module.
        entries: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
        c = 0
        for b, route, d, direct, value in zip(self.boundaries, self._chan_routes(), diag, self._direct, kept):
            u = None
            if b.module is not None:
                u = conv_inputs[c]
                c += 1
            if d is None:
                continue
            ch_all = route[a_all]
            ok = ch_all >= 0
            s_idx, r_idx, o_idx, ch = s_all[ok], r_all[ok], o_all[ok], ch_all[ok]
            if s_idx.numel() == 0:
                continue
            picked = d[r_idx, o_idx]
            if direct is not None:
                acc[direct].index_put_((s_idx, copy_idx[r_idx], ch), picked, accumulate=True)
                for slot in torch.unique(s_idx).tolist():
                    touched[slot].setdefault(direct, True)
            elif b.module is None:
                entries.append((value, s_idx, r_idx, ch, picked))
            else:  # the one-output-channel transposed conv of every pair
                entries.append((u, s_idx, r_idx, None,
                                _restricted_input_grads(b.module, u.detach(), r_idx, ch, picked)))
        if not entries:
            return
        inputs = [(i, t) for i, t in enumerate(z) if t is not None]
        tensors = [t for _, t in inputs]
        if self.vectorised and slots > 1:  # dense (S, ...) cotangents, one vmapped backward
            outs, cots = [], []
            for out, s_idx, r_idx, ch, vals in entries:
                cot = torch.zeros((slots, *out.shape), dtype=out.dtype, device=out.device)
                if ch is None:
                    cot[s_idx, r_idx] = vals
                else:
                    cot[s_idx, r_idx, ch] = vals
                outs.append(out)
                cots.append(cot)
            for (i, _), g in zip(inputs, _grad(outs, tensors, cots, slots, True)):
                acc[i].index_add_(1, copy_idx, g)
                for slot in range(slots):
                    touched[slot][i] = False
            return
        # One backward per slot that has pairs, from only the boundaries its pairs read; gradients
        # go straight into that slot's accumulator (no (S, R, ...) cotangent or gradient stacks).
        # Pairs come ordered by (slot, row) (``nonzero`` of ``valid``), so a slot's are one range.
        n_rows = len(copy_idx)
        ranges: list[dict[int, tuple[int, int]]] = []
        for _, s_idx, _, _, _ in entries:
            used, counts = torch.unique_consecutive(s_idx, return_counts=True)
            ends = torch.cumsum(counts, 0).tolist()
            ranges.append({slot: (end - n, end) for slot, n, end in zip(used.tolist(), counts.tolist(), ends)})
        for slot in sorted(set().union(*ranges)):
            outs, cots = [], []
            for (out, _, r_idx, ch, vals), span in zip(entries, ranges):
                if slot not in span:
                    continue
                lo, hi = span[slot]
                if ch is None and hi - lo == n_rows:  # every row, in order: the gradients are the cotangent
                    cot = vals[lo:hi]
                elif ch is None:
                    cot = torch.zeros_like(out).index_copy_(0, r_idx[lo:hi], vals[lo:hi])
                else:
                    cot = torch.zeros_like(out)
                    cot[r_idx[lo:hi], ch[lo:hi]] = vals[lo:hi]
                outs.append(out)
                cots.append(cot)
            for (i, _), g in zip(inputs, _vjp(outs, tensors, cots)):
                if g is not None:
                    acc[i][slot].index_add_(0, copy_idx, g)
                    touched[slot][i] = False

    def _chan_routes(self) -> list[torch.Tensor]:
        return [self._chan[b.node] for b in self.boundaries]

    def _run_suffix(self, leaves: list[torch.Tensor], order: torch.Tensor) -> torch.Tensor:
        """The suffix on gathered tensors: channel ``o`` of every value is what output channel
        ``order[o]`` reads there. Per-channel constants are gathered and concatenations become
        per-channel selections; everything else in the suffix is channel-agnostic."""
        env: dict[fx.Node, torch.Tensor] = {b.node: leaf for b, leaf in zip(self.boundaries, leaves)}
        for node in self._suffix_nodes:
            args = fx.node.map_arg(node.args, lambda n: env.get(n))
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env.get(n))
            if node.op == "call_module":
                env[node] = self.tail.get_submodule(str(node.target))(*args, **kwargs)
            elif node.target is ig_graph.channel_affine:
                idx = self._chan[node][order].clamp(min=0)
                scale = ig_graph.fetch_attr(self.tail, str(node.args[1].target))[idx]
                shift = ig_graph.fetch_attr(self.tail, str(node.args[2].target))[idx]
                env[node] = ig_graph.channel_affine(args[0], scale, shift)
            elif node.target is torch.cat:
                parts = list(node.args[0])
                out = env[parts[0]]
                for part in parts[1:]:
                    mine = self._chan[part][order] >= 0
                    out = torch.where(mine.view(1, -1, *([1] * (out.dim() - 2))), env[part], out)
                env[node] = out
            elif node.op == "call_function":
                env[node] = node.target(*args, **kwargs)
            else:
                env[node] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return env[self._out_node]
