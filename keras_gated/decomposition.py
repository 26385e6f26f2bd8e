"""The gradient of a recurrent layer, decomposed per timestep.

The three quantities of the background notes' section 1, computed from
what a layer recorded under its probes (`probe_pre_activations`,
`probe_states`); `keras_gated.gradients` runs the probes and calls these.

- Per-step contributions to the weight gradients. A recurrent weight is
  used at every step, and its gradient is the sum over the steps of the
  gradient with respect to the copy used at step t. With z_t the gate
  pre-activations and G_t = dL/dz_t (from the pre-activation probe):
  kernel_t = X_t^T G_t, recurrent_kernel_t = H_t^T G'_t, bias_t =
  sum_batch G_t (with the GRU's `reset_after`, the recurrent bias row gets
  sum_batch G'_t), where X_t and H_t are what each gate block multiplied
  (`cell.input_operands`, `cell.recurrent_operands`: the inputs and
  h_{t-1}, dropped out, and r_t * h_{t-1} for the candidate of a GRU with
  `reset_after=False`) and G'_t = `cell.recurrent_gradient(G_t)` (r_t
  times the candidate's block with `reset_after=True`). Summed over t,
  these are the weight gradients exactly.
- Jacobian norms ||dh_T/dh_t||_F (and ||dc_T/dc_t||_F for the LSTM): one
  forward and backward pass over copies of a few sequences, one copy per
  row of the Jacobian (per unit of h_T, and of c_T), each with zero
  perturbations added to its states.
- The LSTM's retention prod_{j>t} f_j, the cell path's own Jacobian
  dc_T/dc_t along c alone.

Every function works in processing order (time-major, as recorded) and
hands back arrays indexed on the input's time axis.
"""

import keras
from keras import ops

from keras_gated import _autodiff
from keras_gated.gates import split_gates

WEIGHTS = ("kernel", "recurrent_kernel", "bias")
"""Keys of the per-step weight-gradient contributions."""

RETENTION_QUANTILES = {"retention_q50": 0.5, "retention_q90": 0.9}
"""Quantiles over units of the batch-mean retention, beside its mean
(`"retention"`) and maximum (`"retention_max"`)."""

# Elements of one chunk of per-step gradient matrices held at a time.
_CHUNK_ELEMENTS = 1 << 22


def _input_order(values, layer):
    """`values` with time on axis 0, flipped back from processing order."""
    return ops.flip(values, 0) if layer.go_backwards else values


def scaled_norm(values, axes):
    """The L2 norm over `axes`, safe from overflow and underflow."""
    axes = tuple(axes)
    scale = ops.max(ops.abs(values), axis=axes, keepdims=True)
    safe = ops.where(scale > 0, scale, ops.ones_like(scale))
    norm = ops.sqrt(ops.sum(ops.square(values / safe), axis=axes))
    return ops.squeeze(safe, axis=axes) * norm


def _map(function, structure):
    """`function` applied to every tensor of `structure`; None stays None."""
    return keras.tree.map_structure(
        lambda value: None if value is None else function(value), structure
    )


def _blocks(tensor, names):
    return list(split_gates(tensor, names).values())


def _products(operands, gradients):
    """Per step, the concatenated `operand^T @ gradient` of every block:
    `(timesteps, features, n_blocks * units)` from time-major operands
    `(timesteps, batch, features)` and gradients `(timesteps, batch, units)`
    (one of each per block)."""
    if all(operand is operands[0] for operand in operands):
        return ops.einsum(
            "tbf,tbj->tfj", operands[0], ops.concatenate(gradients, -1)
        )
    return ops.concatenate(
        [
            ops.einsum("tbf,tbj->tfj", operand, gradient)
            for operand, gradient in zip(operands, gradients, strict=True)
        ],
        axis=-1,
    )


def _product_norms(operands, gradients):
    """The Frobenius norm of `_products` per step, computed a chunk of
    steps at a time so that the matrices are never all held at once."""
    unique = []
    for operand in operands:
        if not any(operand is seen for seen in unique):
            unique.append(operand)
    index = [[u is o for u in unique].index(True) for o in operands]
    width = operands[0].shape[-1] * sum(g.shape[-1] for g in gradients)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, width))
    static = operands[0].shape[0]
    if static is not None and static <= chunk:
        return scaled_norm(_products(operands, gradients), [1, 2])
    if static is None:
        return _mapped_product_norms(unique, index, gradients, chunk)

    def norms(start):
        pieces = [u[start : start + chunk] for u in unique]
        grads = [g[start : start + chunk] for g in gradients]
        return scaled_norm(_products([pieces[i] for i in index], grads), [1, 2])

    return ops.concatenate(
        [norms(start) for start in range(0, static, chunk)], axis=0
    )


def _mapped_product_norms(unique, index, gradients, chunk):
    """`_product_norms` over a number of steps known only when a
    TensorFlow graph runs: the chunks go through one `tf.map_fn`."""
    import tensorflow as tf

    timesteps = tf.shape(unique[0])[0]
    chunk = tf.minimum(chunk, timesteps)
    count = (timesteps + chunk - 1) // chunk
    padding = count * chunk - timesteps

    def chunked(tensor):
        padded = tf.pad(tensor, [[0, padding], [0, 0], [0, 0]])
        shape = tf.concat([[count, chunk], tf.shape(tensor)[1:]], 0)
        return tf.reshape(padded, shape)

    def norms(pieces):
        chunks, grads = pieces[: len(unique)], pieces[len(unique) :]
        products = _products([chunks[i] for i in index], list(grads))
        return scaled_norm(products, [1, 2])

    result = tf.map_fn(
        norms,
        tuple(chunked(t) for t in unique + list(gradients)),
        fn_output_signature=tf.TensorSpec([None], gradients[0].dtype),
    )
    return tf.reshape(result, [-1])[:timesteps]


def _previous_states(record):
    """h_{t-1} for every step: the initial state, then the recorded
    hidden states but the last."""
    hidden = record["sequences"]["hidden"]
    initial = ops.cast(record["initial_state"], hidden.dtype)[None]
    return ops.concatenate([initial, hidden[:-1]], axis=0)


def _factors(cell, record, d_pre_activation):
    """`{weight: [(operands, gradients)] or bias gradients}` of one call,
    time-major in processing order, in float32."""

    def f32(value):
        return None if value is None else ops.cast(value, "float32")

    names = cell.gate_names
    gates = {n: f32(v) for n, v in record["sequences"].items()}
    d_pre = f32(d_pre_activation)
    d_recurrent = cell.recurrent_gradient(d_pre, gates)
    inputs = f32(record["inputs"])
    input_mask = _map(f32, record["input_mask"])
    recurrent_mask = _map(f32, record["recurrent_mask"])
    factors = {
        "kernel": (
            cell.input_operands(inputs, input_mask),
            _blocks(d_pre, names),
        ),
        "recurrent_kernel": (
            cell.recurrent_operands(
                f32(_previous_states(record)), gates, recurrent_mask
            ),
            _blocks(d_recurrent, names),
        ),
    }
    if cell.use_bias:
        rows = [ops.sum(d_pre, axis=1)]
        if cell.recurrent_bias() is not None:
            rows.append(ops.sum(d_recurrent, axis=1))
        factors["bias"] = rows
    return factors


def _joined(calls):
    """The factors of several calls of one layer, joined along the batch:
    the sum over calls of their products is the product of the joined."""
    if len(calls) == 1:
        return calls[0]
    joined = {}
    for weight in calls[0]:
        if weight == "bias":
            joined[weight] = [
                sum(rows[1:], rows[0])
                for rows in zip(*(c[weight] for c in calls))
            ]
            continue
        operands, gradients = zip(*(c[weight] for c in calls))
        joined[weight] = (
            [ops.concatenate(blocks, axis=1) for blocks in zip(*operands)],
            [ops.concatenate(blocks, axis=1) for blocks in zip(*gradients)],
        )
    return joined


def contribution_norms(layer, calls):
    """The Frobenius norm per timestep of each weight's contribution.

    Args:
        layer: the probed layer (ours: its `cell` has the operands).
        calls: `(record, d_pre_activation)` per call of the layer, with
            the record of `probe_pre_activations` and the gradient of the
            loss with respect to its perturbation, time-major in
            processing order.

    Returns:
        `{"kernel", "recurrent_kernel"[, "bias"]: (timesteps,) tensor}`,
        in the input's time order.
    """
    factors = _joined([_factors(layer.cell, r, d) for r, d in calls])
    norms = {}
    for weight, value in factors.items():
        if weight == "bias":
            norm = scaled_norm(ops.stack(value, axis=1), [1, 2])
        else:
            norm = _product_norms(*value)
        norms[weight] = _input_order(norm, layer)
    return norms


def contribution_matrices(layer, calls):
    """The per-timestep contributions themselves, shaped like the weights.

    Args:
        layer, calls: as for `contribution_norms`.

    Returns:
        `{"kernel": (timesteps, features, n * units), "recurrent_kernel":
        (timesteps, units, n * units)[, "bias": (timesteps, n * units) or
        (timesteps, 2, n * units)]}` in the input's time order: entry t is
        the gradient with respect to the copy of the weight used at step
        t; summed over t, the weight's gradient.
    """
    factors = _joined([_factors(layer.cell, r, d) for r, d in calls])
    matrices = {}
    for weight, value in factors.items():
        if weight == "bias":
            matrix = value[0] if len(value) == 1 else ops.stack(value, axis=1)
        else:
            matrix = _products(*value)
        matrices[weight] = _input_order(matrix, layer)
    return matrices


def retention(layer, record):
    """The LSTM's retention prod_{j>t} f_j per timestep, and its spread.

    A masked step carries the cell state unchanged: it counts as f = 1.

    Args:
        layer: the probed LSTM.
        record: the record of its `probe_pre_activations`.

    Returns:
        `{"retention": mean over batch and units, "retention_q50",
        "retention_q90", "retention_max": quantiles over the units of the
        mean over the batch}`, each `(timesteps,)` in the input's time
        order; 1 at the last step processed.
    """
    forget = ops.cast(record["sequences"]["forget"], "float32")
    mask = record["mask"]
    if mask is not None:
        forget = ops.where(mask[..., None], forget, 1.0)
    # prod_{j>t} f_j: the reversed cumulative product, shifted by a step.
    kept = ops.flip(ops.cumprod(ops.flip(forget, 0), axis=0), 0)
    kept = ops.concatenate([kept[1:], ops.ones_like(kept[:1])], axis=0)
    per_unit = ops.sort(ops.mean(kept, axis=1), axis=-1)
    units = per_unit.shape[-1]
    values = {"retention": ops.mean(per_unit, axis=-1)}
    for key, quantile in RETENTION_QUANTILES.items():
        low = int((units - 1) * quantile)
        high = min(low + 1, units - 1)
        weight = (units - 1) * quantile - low
        values[key] = (1 - weight) * per_unit[:, low] + weight * per_unit[
            :, high
        ]
    values["retention_max"] = per_unit[:, -1]
    return {k: _input_order(v, layer) for k, v in values.items()}


def _activation_slope(activation, values):
    """The derivative of an elementwise activation at `values`."""

    def total(sources):
        watched = sources.source("values", values.shape, values.dtype)
        return ops.sum(activation(watched)), None

    slopes = _autodiff.gradients(total, initial={"values": values})[1]
    return slopes["values"]


def jacobian_norms(twin, sequences, initial_state, mask):
    """Mean over the sequences of ||dh_T/dh_t||_F (and ||dc_T/dc_t||_F).

    h_T (c_T) is the state after the last step, h_t (c_t) after step t;
    each Jacobian holds the other state fixed (the LSTM's c_t for dh, h_t
    for dc). Computed by one forward and backward pass over `units` copies
    of every sequence (2 * units for the LSTM): copy k's loss is unit k of
    h_T (of c_T), so its state-probe gradient at step t is row k of the
    Jacobian at t. A probe on c enters before h_t = o_t * act(c_t); the
    h path is taken back out with the chain rule.

    Args:
        twin: a keras_gated layer with the measured layer's weights and
            `go_backwards`, `return_state=True`, `return_gates=True`,
            `return_sequences=False`, `stateful=False`.
        sequences: `(batch, timesteps, features)`, the layer's inputs.
        initial_state: None or the list of initial states.
        mask: None or a boolean `(batch, timesteps)`.

    Returns:
        `{"jacobian_hidden"[, "jacobian_cell"]: (timesteps,)}` and the
        spectral norms under `"jacobian_hidden_spectral"`
        (`"jacobian_cell_spectral"`), in the input's time order.
    """
    states = twin.state_names
    units = twin.cell.units
    rows = units * len(states)
    batch = ops.shape(sequences)[0]

    def tiled(value):
        return None if value is None else ops.repeat(value, rows, axis=0)

    selectors = ops.tile(ops.eye(rows, dtype="float32"), (batch, 1))
    shape = (batch * rows, ops.shape(sequences)[1], units)

    def forward(sources):
        probes = {
            s: sources.source(s, shape, twin.compute_dtype) for s in states
        }
        with twin.probe_states(probes):
            outputs = twin(
                tiled(sequences),
                initial_state=_map(tiled, initial_state),
                mask=tiled(mask),
                training=False,
            )
        finals = ops.concatenate(
            [ops.cast(f, "float32") for f in outputs[1 : 1 + len(states)]], -1
        )
        return ops.sum(finals * selectors), outputs[-1]

    gates, grads, _ = _autodiff.gradients(forward)
    grads = {s: ops.cast(grads[s], "float32") for s in states}
    if "cell" in states:
        factor = ops.cast(gates["output"], "float32") * _activation_slope(
            twin.cell.activation, ops.cast(gates["cell"], "float32")
        )
        if twin.go_backwards:
            factor = ops.flip(factor, 1)
        grads["cell"] = grads["cell"] - grads["hidden"] * factor
    return _jacobian_summaries(grads, states, units, batch)


def _jacobian_summaries(grads, states, units, batch):
    summaries = {}
    for position, state in enumerate(states):
        rows = ops.reshape(grads[state], (batch, len(states), units, -1, units))
        # (batch, timesteps, rows of the state's own Jacobian, units)
        matrices = ops.transpose(rows[:, position], (0, 2, 1, 3))
        frobenius = scaled_norm(matrices, [2, 3])
        scale = ops.max(ops.abs(matrices), axis=(2, 3), keepdims=True)
        scale = ops.where(scale > 0, scale, ops.ones_like(scale))
        spectral = ops.svd(matrices / scale, compute_uv=False)[..., 0]
        spectral = spectral * scale[..., 0, 0]
        summaries[f"jacobian_{state}"] = ops.mean(frobenius, 0)
        summaries[f"jacobian_{state}_spectral"] = ops.mean(spectral, 0)
    return summaries
