"""The cells: one step each, every gate computed in plain sight.

A cell knows nothing about sequences. It owns the weights (named and shaped
exactly as in Keras) and two pieces of math: `project_inputs`, the input
half of the pre-activations (`x @ kernel + bias`), which works on one step
or on a whole sequence at once, and `step`, the recurrence for one
timestep given that projection. `call` chains the two so the cell runs
inside `keras.layers.RNN` like Keras' own cells. Written in `keras.ops`,
`step` is the portable reference: our sequence layers run it in their
generic loop, and the fast path (`keras_gated._tf`) is tested equal to it.
"""

import keras
from keras import ops

from keras_gated import _validation as check
from keras_gated.gates import GRU_GATES
from keras_gated.gates import LSTM_GATES
from keras_gated.gates import SIMPLE_RNN_GATES
from keras_gated.gates import block_columns
from keras_gated.gates import gate_block
from keras_gated.gates import join_gates
from keras_gated.gates import split_gates


def _keras_dropout_mixin():
    # keras.layers.RNN pre-creates a cell's dropout masks before its loop (so
    # one mask serves every timestep) only for cells deriving from Keras'
    # dropout mixin, which Keras does not export. We derive from the same
    # class, found on the public LSTMCell, so our cells behave identically
    # inside keras.layers.RNN; the methods below are the same contract.
    for klass in keras.layers.LSTMCell.__mro__:
        if klass.__name__ == "DropoutRNNCell":
            return klass
    return object


class _DropoutMasks(_keras_dropout_mixin()):
    """Per-sequence dropout masks, drawn once and reused at every step.

    Masks are drawn with `keras.random.dropout` from the cell's
    `seed_generator`, in Keras' order (input masks, then recurrent masks;
    one mask each, or one per gate when `implementation == 1`), so a layer
    and its built-in twin with the same `seed` draw the same masks.
    """

    def _create_dropout_mask(self, step_input, rate):
        ones = ops.ones_like(step_input)
        count = getattr(self, "dropout_mask_count", None)
        if count is None:
            return keras.random.dropout(ones, rate, seed=self.seed_generator)
        return [
            keras.random.dropout(ones, rate, seed=self.seed_generator)
            for _ in range(count)
        ]

    def get_dropout_mask(self, step_input):
        if getattr(self, "_dropout_mask", None) is None and self.dropout > 0:
            self._dropout_mask = self._create_dropout_mask(
                step_input, self.dropout
            )
        return getattr(self, "_dropout_mask", None)

    def get_recurrent_dropout_mask(self, step_input):
        if (
            getattr(self, "_recurrent_dropout_mask", None) is None
            and self.recurrent_dropout > 0
        ):
            self._recurrent_dropout_mask = self._create_dropout_mask(
                step_input, self.recurrent_dropout
            )
        return getattr(self, "_recurrent_dropout_mask", None)

    def reset_dropout_mask(self):
        self._dropout_mask = None

    def reset_recurrent_dropout_mask(self):
        self._recurrent_dropout_mask = None


def _per_gate(mask, count):
    """A dropout mask as one mask per gate (Keras draws one or `count`)."""
    if isinstance(mask, (list, tuple)):
        return list(mask)
    return [mask] * count


class _RecurrentCell(keras.layers.Layer, _DropoutMasks):
    """Constructor, weights and config shared by every cell."""

    gate_names = ()

    def __init__(
        self,
        units,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check.check_units(units)
        self.activation = check.get_activation("activation", activation)
        self.use_bias = check.check_bool("use_bias", use_bias)
        for name, value in (
            ("kernel_initializer", kernel_initializer),
            ("recurrent_initializer", recurrent_initializer),
            ("bias_initializer", bias_initializer),
        ):
            setattr(self, name, check.get_initializer(name, value))
        for name, value in (
            ("kernel_regularizer", kernel_regularizer),
            ("recurrent_regularizer", recurrent_regularizer),
            ("bias_regularizer", bias_regularizer),
        ):
            setattr(self, name, check.get_regularizer(name, value))
        for name, value in (
            ("kernel_constraint", kernel_constraint),
            ("recurrent_constraint", recurrent_constraint),
            ("bias_constraint", bias_constraint),
        ):
            setattr(self, name, check.get_constraint(name, value))
        self.dropout = check.check_rate("dropout", dropout)
        self.recurrent_dropout = check.check_rate(
            "recurrent_dropout", recurrent_dropout
        )
        self.seed = check.check_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.state_size = self.units
        self.output_size = self.units

    def _bias_initializer(self):
        return self.bias_initializer

    def _bias_shape(self):
        return (len(self.gate_names) * self.units,)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        width = len(self.gate_names) * self.units
        self.kernel = self.add_weight(
            shape=(input_dim, width),
            name="kernel",
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, width),
            name="recurrent_kernel",
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        if self.use_bias:
            self.bias = self.add_weight(
                shape=self._bias_shape(),
                name="bias",
                initializer=self._bias_initializer(),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None

    def input_bias(self):
        """The bias added to the input projection (None without bias)."""
        return self.bias

    def recurrent_bias(self):
        """The bias added to `h_{t-1} @ recurrent_kernel` alone (None but
        in the GRU with `reset_after=True`)."""
        return None

    def project_inputs(self, inputs, dropout_mask=None, add_bias=True):
        """Input half of every gate pre-activation: `x @ kernel + bias`.

        Args:
            inputs: `(batch, features)` or `(batch, timesteps, features)`.
            dropout_mask: None, or the cell's input dropout mask(s) from
                `get_dropout_mask`, broadcastable against `inputs`.
            add_bias: False leaves out `input_bias()`, for a loop that
                adds it at each step.

        Returns:
            `(..., n_gates * units)`, the gate blocks in weight order.
        """
        if dropout_mask is None:
            projected = ops.matmul(inputs, self.kernel)
        elif isinstance(dropout_mask, (list, tuple)):
            projected = ops.concatenate(
                [
                    ops.matmul(
                        inputs * mask,
                        gate_block(self.kernel, self.gate_names, name),
                    )
                    for mask, name in zip(dropout_mask, self.gate_names)
                ],
                axis=-1,
            )
        else:
            projected = ops.matmul(inputs * dropout_mask, self.kernel)
        bias = self.input_bias()
        if add_bias and bias is not None:
            projected = projected + bias
        return projected

    def _recurrent_matmul(self, h_prev, recurrent_mask, names):
        """`h_prev @ recurrent_kernel` for the gate blocks in `names`.

        With recurrent dropout each gate sees its own masked copy of h_prev.
        """
        if recurrent_mask is None:
            if names == self.gate_names:
                return ops.matmul(h_prev, self.recurrent_kernel)
            columns = block_columns(self.gate_names, names, self.units)
            return ops.matmul(h_prev, self.recurrent_kernel[:, columns])
        masks = _per_gate(recurrent_mask, len(self.gate_names))
        return ops.concatenate(
            [
                ops.matmul(
                    h_prev * masks[self.gate_names.index(name)],
                    gate_block(self.recurrent_kernel, self.gate_names, name),
                )
                for name in names
            ],
            axis=-1,
        )

    def input_operands(self, inputs, dropout_mask=None):
        """What each gate block of `kernel` multiplies: the inputs, dropped
        out as `project_inputs` drops them.

        With these, the gradient with respect to the copy of `kernel` used
        at a step is, block by block, `operand^T @ dL/d(projection)`.

        Args:
            inputs: `(..., batch, features)`.
            dropout_mask: None, or the cell's input dropout mask(s).

        Returns:
            A list of tensors shaped like `inputs`, one per gate block in
            weight order (the same tensor where no mask tells them apart).
        """
        if dropout_mask is None:
            return [inputs] * len(self.gate_names)
        masks = _per_gate(dropout_mask, len(self.gate_names))
        return [inputs * mask for mask in masks]

    def recurrent_operands(self, h_prev, gates, recurrent_mask=None):
        """What each gate block of `recurrent_kernel` multiplies at a step:
        h_{t-1}, dropped out per gate as `step` drops it.

        Args:
            h_prev: `(..., batch, units)`, the state before the step.
            gates: the step's gate dict, as `step` returns it.
            recurrent_mask: None, or the recurrent dropout mask(s).

        Returns:
            A list of `(..., batch, units)` tensors, one per gate block.
        """
        if recurrent_mask is None:
            return [h_prev] * len(self.gate_names)
        masks = _per_gate(recurrent_mask, len(self.gate_names))
        return [h_prev * mask for mask in masks]

    def recurrent_gradient(self, d_pre_activation, gates):
        """dL/d(h_{t-1} @ recurrent_kernel + b') from the gradient of the
        gate pre-activations z_t (the input projection's gradient).

        The recurrent half enters z_t unchanged here, so the two are equal.

        Args:
            d_pre_activation: `(..., batch, n_gates * units)`, dL/dz_t.
            gates: the step's gate dict.
        """
        return d_pre_activation

    def call(self, inputs, states, training=False):
        dropout_mask = recurrent_mask = None
        if training and self.dropout > 0:
            dropout_mask = self.get_dropout_mask(inputs)
        if training and self.recurrent_dropout > 0:
            h_prev = states[0] if isinstance(states, (list, tuple)) else states
            recurrent_mask = self.get_recurrent_dropout_mask(h_prev)
        projected = self.project_inputs(inputs, dropout_mask)
        h, new_states, _ = self.step(projected, states, recurrent_mask)
        return h, new_states

    def get_config(self):
        config = {
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(
                self.kernel_initializer
            ),
            "recurrent_initializer": keras.initializers.serialize(
                self.recurrent_initializer
            ),
            "bias_initializer": keras.initializers.serialize(
                self.bias_initializer
            ),
            "kernel_regularizer": keras.regularizers.serialize(
                self.kernel_regularizer
            ),
            "recurrent_regularizer": keras.regularizers.serialize(
                self.recurrent_regularizer
            ),
            "bias_regularizer": keras.regularizers.serialize(
                self.bias_regularizer
            ),
            "kernel_constraint": keras.constraints.serialize(
                self.kernel_constraint
            ),
            "recurrent_constraint": keras.constraints.serialize(
                self.recurrent_constraint
            ),
            "bias_constraint": keras.constraints.serialize(
                self.bias_constraint
            ),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}

    def get_initial_state(self, batch_size=None):
        sizes = self.state_size
        if isinstance(sizes, int):
            sizes = [sizes]
        return [
            ops.zeros((batch_size, size), dtype=self.compute_dtype)
            for size in sizes
        ]


class _GatedCell(_RecurrentCell):
    """The LSTM's and GRU's extras: a recurrent activation for the gates,
    and Keras' legacy `implementation` (1 draws one dropout mask per gate;
    0 and 2, the matrix form, one)."""

    def __init__(self, units, recurrent_activation="sigmoid", **kwargs):
        implementation = kwargs.pop("implementation", 2)
        super().__init__(units, **kwargs)
        self.recurrent_activation = check.get_activation(
            "recurrent_activation", recurrent_activation
        )
        self.implementation = check.check_choice(
            "implementation", implementation, (0, 1, 2)
        )
        # As in Keras: recurrent dropout draws one mask per gate.
        if self.recurrent_dropout != 0.0:
            self.implementation = 1
        if self.implementation == 1:
            self.dropout_mask_count = len(self.gate_names)

    def get_config(self):
        return {
            **super().get_config(),
            "recurrent_activation": keras.activations.serialize(
                self.recurrent_activation
            ),
        }


@keras.saving.register_keras_serializable(package="keras_gated")
class LSTMCell(_GatedCell):
    """One LSTM step with every gate computed explicitly.

    A drop-in replacement for `keras.layers.LSTMCell`: same arguments, same
    weights (`kernel` `(features, 4 * units)`, `recurrent_kernel`
    `(units, 4 * units)`, `bias` `(4 * units,)`, gate blocks in the order
    i, f, c, o), same results. With x_t the input, h_{t-1} and c_{t-1} the
    previous states, W, U, b the kernel, recurrent kernel and bias blocks,
    sigma the recurrent activation (sigmoid) and tanh the activation:

        i_t = sigma(x_t W_i + h_{t-1} U_i + b_i)     input gate
        f_t = sigma(x_t W_f + h_{t-1} U_f + b_f)     forget gate
        g_t = tanh(x_t W_c + h_{t-1} U_c + b_c)      candidate
        o_t = sigma(x_t W_o + h_{t-1} U_o + b_o)     output gate
        c_t = f_t * c_{t-1} + i_t * g_t              cell state
        h_t = o_t * tanh(c_t)                        hidden state / output

    The additive cell update is what lets a gradient flow back through c_t
    without a product of weight matrices.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation for the candidate and for c_t in h_t.
            Default: `"tanh"`. `None` means linear.
        recurrent_activation: Activation for the gates. Default:
            `"sigmoid"`.
        use_bias: Whether the cell uses a bias vector. Default: `True`.
        kernel_initializer: Initializer for `kernel`. Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `recurrent_kernel`.
            Default: `"orthogonal"`.
        bias_initializer: Initializer for `bias`. Default: `"zeros"`.
        unit_forget_bias: If `True`, add 1 to the forget-gate bias at
            initialization (Jozefowicz et al., 2015). Default: `True`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers for the three weights. Default: `None`.
        kernel_constraint, recurrent_constraint, bias_constraint:
            Constraints for the three weights. Default: `None`.
        dropout: Float in [0, 1), fraction of the inputs to drop.
        recurrent_dropout: Float in [0, 1), fraction of h_{t-1} to drop.
        seed: Random seed for the dropout masks.
        **kwargs: Base layer arguments (`name`, `dtype`, ...); also
            `implementation` (0, 1 or 2) for compatibility: 1 draws one
            dropout mask per gate, as Keras does; 0, which older saved
            models carry, acts as 2.

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: A list `[h_prev, c_prev]`, each `(batch, units)`.
        training: Python boolean, whether dropout is applied.

    Returns:
        `(h, [h, c])`, the output and the new states, as
        `keras.layers.LSTMCell` returns them. `step` also returns the gates.

    Example:

    >>> cell = keras_gated.LSTMCell(4)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> rnn(np.zeros((2, 10, 8))).shape
    (2, 10, 4)

    Reference:
        Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural
        Computation 9(8), 1997; Gers, Schmidhuber & Cummins, "Learning to
        Forget", 2000.
    """

    gate_names = LSTM_GATES

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = check.check_bool(
            "unit_forget_bias", unit_forget_bias
        )
        self.state_size = [self.units, self.units]

    def _bias_initializer(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        columns = block_columns(self.gate_names, ("forget",), self.units)
        width = len(self.gate_names) * self.units
        base = self.bias_initializer

        def bias_initializer(_, *args, **kwargs):
            # As Keras draws it: the blocks before the forget gate's, ones,
            # the blocks after it (one draw each side, so a seeded random
            # initializer gives the built-in's values).
            ones = keras.initializers.get("ones")
            parts = [
                base((columns.start,), *args, **kwargs),
                ones((self.units,), *args, **kwargs),
                base((width - columns.stop,), *args, **kwargs),
            ]
            return ops.concatenate([p for p in parts if p.shape[0]])

        return bias_initializer

    def step(self, projected, states, recurrent_mask=None, offsets=None):
        """One timestep from the input projection and the previous states.

        Args:
            projected: `(batch, 4 * units)` from `project_inputs`.
            states: `[h_prev, c_prev]`.
            recurrent_mask: None, or the recurrent dropout mask(s).
            offsets: None, or `[h_offset, c_offset]` added to h_t and c_t
                as they are computed (c_t before h_t = o_t * tanh(c_t)):
                the probes of `keras_gated.LSTM.probe_states`.

        Returns:
            `(h, [h, c], gates)` with `gates` a dict of the four gate
            activations keyed by `keras_gated.gates.LSTM_GATES`.
        """
        h_prev, c_prev = states[0], states[1]
        pre = projected + self._recurrent_matmul(
            h_prev, recurrent_mask, self.gate_names
        )
        blocks = split_gates(pre, self.gate_names)
        input_gate = self.recurrent_activation(blocks["input"])
        forget_gate = self.recurrent_activation(blocks["forget"])
        candidate = self.activation(blocks["candidate"])
        output_gate = self.recurrent_activation(blocks["output"])
        c = forget_gate * c_prev + input_gate * candidate
        if offsets is not None:
            c = c + offsets[1]
        h = output_gate * self.activation(c)
        if offsets is not None:
            h = h + offsets[0]
        gates = {
            "input": input_gate,
            "forget": forget_gate,
            "candidate": candidate,
            "output": output_gate,
        }
        return h, [h, c], gates

    def get_config(self):
        return {
            **super().get_config(),
            "unit_forget_bias": self.unit_forget_bias,
        }


@keras.saving.register_keras_serializable(package="keras_gated")
class GRUCell(_GatedCell):
    """One GRU step with every gate computed explicitly.

    A drop-in replacement for `keras.layers.GRUCell`: same arguments, same
    weights (`kernel` `(features, 3 * units)`, `recurrent_kernel`
    `(units, 3 * units)`, gate blocks in the order z, r, h; `bias`
    `(3 * units,)`, or `(2, 3 * units)` with `reset_after=True`: input bias
    b and recurrent bias b'), same results:

        z_t = sigma(x_t W_z + h_{t-1} U_z + b_z + b'_z)      update gate
        r_t = sigma(x_t W_r + h_{t-1} U_r + b_r + b'_r)      reset gate
        reset_after=True (Keras' default, cuDNN-compatible):
            n_t = tanh(x_t W_h + b_h + r_t * (h_{t-1} U_h + b'_h))
        reset_after=False (Cho et al.'s original):
            n_t = tanh(x_t W_h + b_h + (r_t * h_{t-1}) U_h)
        h_t = z_t * h_{t-1} + (1 - z_t) * n_t                 new state

    (b' is zero with `reset_after=False`.) n_t is the candidate.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation for the candidate. Default: `"tanh"`.
        recurrent_activation: Activation for the gates. Default:
            `"sigmoid"`.
        use_bias: Whether the cell uses a bias. Default: `True`.
        kernel_initializer, recurrent_initializer, bias_initializer:
            Initializers. Defaults: `"glorot_uniform"`, `"orthogonal"`,
            `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers. Default: `None`.
        kernel_constraint, recurrent_constraint, bias_constraint:
            Constraints. Default: `None`.
        dropout: Float in [0, 1), fraction of the inputs to drop.
        recurrent_dropout: Float in [0, 1), fraction of h_{t-1} to drop.
        reset_after: Apply the reset gate after the recurrent matmul
            (`True`, default) or before it (`False`).
        seed: Random seed for the dropout masks.
        **kwargs: Base layer arguments; also `implementation` (0, 1 or
            2, as in `LSTMCell`).

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: `[h_prev]` (or `h_prev`), `(batch, units)`.
        training: Python boolean, whether dropout is applied.

    Returns:
        `(h, [h])` (or `(h, h)` when `states` was a bare tensor), as
        `keras.layers.GRUCell` returns them.

    Example:

    >>> cell = keras_gated.GRUCell(4)
    >>> rnn = keras.layers.RNN(cell)
    >>> rnn(np.zeros((2, 10, 8))).shape
    (2, 4)

    Reference:
        Cho et al., "Learning Phrase Representations using RNN
        Encoder-Decoder for Statistical Machine Translation", EMNLP 2014.
    """

    gate_names = GRU_GATES

    def __init__(self, units, reset_after=True, **kwargs):
        super().__init__(units, **kwargs)
        self.reset_after = check.check_bool("reset_after", reset_after)

    def _bias_shape(self):
        if self.reset_after:
            return (2, len(self.gate_names) * self.units)
        return (len(self.gate_names) * self.units,)

    def input_bias(self):
        """The bias added to the input projection: with `reset_after`,
        the bias' first row (None without bias)."""
        if self.bias is None or not self.reset_after:
            return self.bias
        return self.bias[0]

    def recurrent_bias(self):
        """With `reset_after` (and a bias), the bias' second row b', added
        to `h_{t-1} @ recurrent_kernel`; None otherwise."""
        if self.bias is None or not self.reset_after:
            return None
        return self.bias[1]

    def recurrent_operands(self, h_prev, gates, recurrent_mask=None):
        """As the base cell's, but with `reset_after=False` the candidate
        block multiplies r_t * h_{t-1} (dropped out)."""
        operands = super().recurrent_operands(h_prev, gates, recurrent_mask)
        if not self.reset_after:
            names = self.gate_names
            reset = gates["reset"] * h_prev
            if recurrent_mask is not None:
                mask = _per_gate(recurrent_mask, len(names))
                reset = reset * mask[names.index("candidate")]
            operands[names.index("candidate")] = reset
        return operands

    def recurrent_gradient(self, d_pre_activation, gates):
        """With `reset_after=True` the candidate's recurrent half enters
        as r_t * (h_{t-1} U_h + b'_h): its gradient is r_t times the
        candidate pre-activation's. Otherwise as the base cell's."""
        if not self.reset_after:
            return d_pre_activation
        blocks = split_gates(d_pre_activation, self.gate_names)
        blocks["candidate"] = blocks["candidate"] * gates["reset"]
        return join_gates(blocks, self.gate_names)

    def step(self, projected, states, recurrent_mask=None, offsets=None):
        """One timestep from the input projection and the previous state.

        Args:
            projected: `(batch, 3 * units)` from `project_inputs`.
            states: `[h_prev]` or `h_prev`.
            recurrent_mask: None, or the recurrent dropout mask(s).
            offsets: None, or `[h_offset]` added to h_t.

        Returns:
            `(h, new_states, gates)` with `gates` keyed by
            `keras_gated.gates.GRU_GATES`; `new_states` mirrors `states`.
        """
        nested = isinstance(states, (list, tuple))
        h_prev = states[0] if nested else states
        x = split_gates(projected, self.gate_names)
        if self.reset_after:
            recurrent = self._recurrent_matmul(
                h_prev, recurrent_mask, self.gate_names
            )
            if self.bias is not None:
                recurrent = recurrent + self.recurrent_bias()
            rec = split_gates(recurrent, self.gate_names)
        else:
            rec = split_gates(
                self._recurrent_matmul(
                    h_prev, recurrent_mask, self.gate_names[:2]
                ),
                self.gate_names[:2],
            )
        update_gate = self.recurrent_activation(x["update"] + rec["update"])
        reset_gate = self.recurrent_activation(x["reset"] + rec["reset"])
        if self.reset_after:
            recurrent_candidate = reset_gate * rec["candidate"]
        else:
            recurrent_candidate = self._recurrent_matmul(
                reset_gate * h_prev, recurrent_mask, ("candidate",)
            )
        candidate = self.activation(x["candidate"] + recurrent_candidate)
        h = update_gate * h_prev + (1 - update_gate) * candidate
        if offsets is not None:
            h = h + offsets[0]
        gates = {
            "update": update_gate,
            "reset": reset_gate,
            "candidate": candidate,
        }
        return h, ([h] if nested else h), gates

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


@keras.saving.register_keras_serializable(package="keras_gated")
class SimpleRNNCell(_RecurrentCell):
    """One step of a fully connected (vanilla) RNN, computed explicitly.

    A drop-in replacement for `keras.layers.SimpleRNNCell`: same arguments,
    same weights (`kernel` `(features, units)`, `recurrent_kernel`
    `(units, units)`, `bias` `(units,)`), same results:

        z_t = x_t W + h_{t-1} U + b      pre-activation
        h_t = tanh(z_t)                  hidden state / output

    A vanilla RNN has no gates. In their place `step` returns the
    pre-activation z_t (`keras_gated.gates.SIMPLE_RNN_GATES`), from which
    tanh'(z_t) = 1 - h_t^2 follows: with U^T it makes the step's Jacobian
    dh_t/dh_{t-1} = diag(1 - h_t^2) U^T, whose product over many steps is
    what vanishes (or explodes).

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation of the pre-activation. Default: `"tanh"`;
            `None` means linear.
        use_bias: Whether the cell uses a bias vector. Default: `True`.
        kernel_initializer, recurrent_initializer, bias_initializer:
            Initializers. Defaults: `"glorot_uniform"`, `"orthogonal"`,
            `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers. Default: `None`.
        kernel_constraint, recurrent_constraint, bias_constraint:
            Constraints. Default: `None`.
        dropout: Float in [0, 1), fraction of the inputs to drop.
        recurrent_dropout: Float in [0, 1), fraction of h_{t-1} to drop.
        seed: Random seed for the dropout masks.
        **kwargs: Base layer arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: A 2D tensor `(batch, features)`.
        states: `[h_prev]` (or `h_prev`), `(batch, units)`.
        training: Python boolean, whether dropout is applied.

    Returns:
        `(h, [h])` (or `(h, h)` when `states` was a bare tensor), as
        `keras.layers.SimpleRNNCell` returns them.

    Example:

    >>> cell = keras_gated.SimpleRNNCell(4)
    >>> rnn = keras.layers.RNN(cell)
    >>> rnn(np.zeros((2, 10, 8))).shape
    (2, 4)

    Reference:
        Elman, "Finding Structure in Time", Cognitive Science 14(2), 1990.
    """

    gate_names = SIMPLE_RNN_GATES

    def step(self, projected, states, recurrent_mask=None, offsets=None):
        """One timestep from the input projection and the previous state.

        Args:
            projected: `(batch, units)` from `project_inputs`.
            states: `[h_prev]` or `h_prev`.
            recurrent_mask: None, or the recurrent dropout mask.
            offsets: None, or `[h_offset]` added to h_t.

        Returns:
            `(h, new_states, gates)` with `gates` keyed by
            `keras_gated.gates.SIMPLE_RNN_GATES`; `new_states` mirrors
            `states`.
        """
        nested = isinstance(states, (list, tuple))
        h_prev = states[0] if nested else states
        pre_activation = projected + self._recurrent_matmul(
            h_prev, recurrent_mask, self.gate_names
        )
        h = self.activation(pre_activation)
        if offsets is not None:
            h = h + offsets[0]
        return h, ([h] if nested else h), {"pre_activation": pre_activation}
