"""LSTM and GRU sequence layers: drop-in for Keras', with gate outputs.

A layer owns a cell (`keras_gated.LSTMCell` / `GRUCell`) and runs the loop:
it projects the inputs of every timestep in one matmul, steps the cell's
recurrence over time (`keras_gated.recurrence`), applies masks, direction,
dropout and statefulness as `keras.layers.RNN` does, and returns what was
asked for, the gate sequences included.
"""

import contextlib

import keras
from keras import ops

from keras_gated import _tf_fused
from keras_gated import _validation as check
from keras_gated.cells import GRUCell
from keras_gated.cells import LSTMCell
from keras_gated.gates import GRU_SEQUENCES
from keras_gated.gates import LSTM_SEQUENCES
from keras_gated.recurrence import masked_last_output
from keras_gated.recurrence import masked_outputs
from keras_gated.recurrence import run_recurrence

_CELL_ARGUMENTS = (
    "units",
    "activation",
    "recurrent_activation",
    "use_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "dropout",
    "recurrent_dropout",
)


def _from_cell(name):
    return property(lambda self: getattr(self.cell, name))


class _Untracked:
    """Holds a value out of sight of Keras' attribute tracking.

    The state variables of a stateful layer are not weights (the built-in
    layers keep them out of `layer.weights` too), so `get_weights` and
    weight files stay those of the built-in layer.
    """

    def __init__(self, value):
        self.value = value


class _GatedRNN(keras.layers.Layer):
    """The loop, masking, state and output logic shared by LSTM and GRU."""

    sequence_names = ()
    state_sequences = ()
    state_names = ()

    def __init__(
        self,
        cell,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        return_gates=False,
        zero_output_for_mask=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.cell = cell
        self.return_sequences = check.check_bool(
            "return_sequences", return_sequences
        )
        self.return_state = check.check_bool("return_state", return_state)
        self.go_backwards = check.check_bool("go_backwards", go_backwards)
        self.stateful = check.check_bool("stateful", stateful)
        self.unroll = check.check_bool("unroll", unroll)
        self.use_cudnn = check.check_choice(
            "use_cudnn", use_cudnn, ("auto", True, False)
        )
        self.return_gates = check.check_bool("return_gates", return_gates)
        self._zero_output_for_mask = check.check_bool(
            "zero_output_for_mask", zero_output_for_mask
        )
        state_size = cell.state_size
        self.state_size = (
            [state_size] if isinstance(state_size, int) else list(state_size)
        )
        self.supports_masking = True
        self._state_store = _Untracked(None)
        self._expected_batch_size = None
        self._input_features = None
        self._probes = None

    @property
    def zero_output_for_mask(self):
        return self._zero_output_for_mask

    @zero_output_for_mask.setter
    def zero_output_for_mask(self, value):
        # keras.layers.Bidirectional sets this on the layers it wraps; it is
        # the one place where we learn that we are being wrapped.
        if self.return_gates:
            raise ValueError(
                f"Layer '{self.name}' has return_gates=True, which "
                "keras.layers.Bidirectional cannot wrap: it expects outputs "
                "and states only. Wrap the layer with return_gates=False, "
                "then read each direction's gates from a layer with "
                "return_gates=True (and go_backwards=True for the backward "
                "direction) that is given the same weights with "
                "set_weights(bidirectional.forward_layer.get_weights())."
            )
        self._zero_output_for_mask = check.check_bool(
            "zero_output_for_mask", value
        )

    def _check_input_shape(self, shape):
        shape = tuple(shape)
        expected = (
            "(batch, timesteps, features)"
            if self._input_features is None
            else f"(batch, timesteps, {self._input_features})"
        )
        if len(shape) != 3 or (
            self._input_features is not None
            and shape[-1] is not None
            and shape[-1] != self._input_features
        ):
            raise ValueError(
                f"Layer '{self.name}' expects inputs of shape {expected}. "
                f"Received: inputs.shape={shape}"
            )
        if shape[-1] is None:
            raise ValueError(
                f"Layer '{self.name}' needs a known feature size: inputs of "
                f"shape {expected}. Received: inputs.shape={shape}"
            )

    def build(self, sequences_shape, initial_state_shape=None):
        self._check_input_shape(sequences_shape)
        self._input_features = sequences_shape[-1]
        if not self.cell.built:
            self.cell.build((sequences_shape[0], sequences_shape[-1]))
        if self.stateful:
            if self.states is not None:
                self.reset_state()
            else:
                if sequences_shape[0] is None:
                    raise ValueError(
                        f"Layer '{self.name}' has stateful=True and needs a "
                        "static batch size, e.g. keras.Input(batch_size=...). "
                        f"Received: inputs.shape={tuple(sequences_shape)}"
                    )
                self._create_state_variables(sequences_shape[0])

    @property
    def states(self):
        """The state variables of a stateful layer (None otherwise)."""
        return self._state_store.value

    def _create_state_variables(self, batch_size):
        self._expected_batch_size = batch_size
        self._state_store = _Untracked(
            [
                keras.Variable(
                    value,
                    trainable=False,
                    dtype=self.variable_dtype,
                    name="rnn_state",
                )
                for value in self.get_initial_state(batch_size)
            ]
        )

    def get_initial_state(self, batch_size):
        return self.cell.get_initial_state(batch_size=batch_size)

    def reset_state(self):
        if self.states is not None:
            for state in self.states:
                state.assign(ops.zeros_like(state.value))

    def reset_states(self):
        self.reset_state()

    def _check_call_shape(self, shape):
        self._check_input_shape(shape)
        if self.unroll and shape[1] is None:
            raise ValueError(
                f"Layer '{self.name}' has unroll=True and needs a known "
                "number of timesteps, e.g. keras.Input(shape=(timesteps, "
                f"features)). Received: inputs.shape={tuple(shape)}"
            )

    def __call__(self, *args, **kwargs):
        if not self.return_gates or self.activity_regularizer is None:
            return super().__call__(*args, **kwargs)
        # Keras regularizes every tensor a layer returns; like the
        # built-in, regularize the outputs and states, not the gates.
        regularizer = self.activity_regularizer
        self.activity_regularizer = None
        try:
            outputs = super().__call__(*args, **kwargs)
        finally:
            self.activity_regularizer = regularizer
        for output in keras.tree.flatten(outputs[:-1]):
            if ops.is_tensor(output):
                batch = ops.cast(ops.shape(output)[0], output.dtype)
                self.add_loss(ops.divide_no_nan(regularizer(output), batch))
        return outputs

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        self._check_call_shape(sequences_shape)
        batch, timesteps = sequences_shape[0], sequences_shape[1]
        units = self.cell.units
        if self.return_sequences:
            output_shape = (batch, timesteps, units)
        else:
            output_shape = (batch, units)
        shapes = [output_shape]
        if self.return_state:
            shapes += [(batch, size) for size in self.state_size]
        if self.return_gates:
            shapes.append(
                {
                    name: (batch, timesteps, units)
                    for name in self.sequence_names
                }
            )
        return shapes[0] if len(shapes) == 1 else tuple(shapes)

    def compute_mask(self, _, mask):
        mask = keras.tree.flatten(mask)[0] if mask is not None else None
        output_mask = mask if self.return_sequences else None
        if not (self.return_state or self.return_gates):
            return output_mask
        extra = len(self.state_size) if self.return_state else 0
        extra += len(self.sequence_names) if self.return_gates else 0
        return [output_mask] + [None] * extra

    @contextlib.contextmanager
    def probe_states(self, perturbations):
        """Adds tensors to the states at every step, while active.

        The instrument behind the per-timestep gradient norms: with zero
        `perturbations` the outputs are unchanged, and the gradient of a
        loss with respect to `perturbations[name][:, t]` is the total
        derivative dL/dh_t (or dL/dc_t), through the recurrence and through
        everything after the layer.

        Args:
            perturbations: dict mapping state names (`"hidden"`, and
                `"cell"` for the LSTM) to tensors or variables of shape
                `(batch, timesteps, units)`, in the input's time order
                (also with `go_backwards=True`). The cell adds them where it
                computes the states (c_t before h_t = o_t * tanh(c_t)); at
                a masked step, to the carried-over states, so dL/dh_t at a
                padded step is the gradient of the state carried through
                it, not zero.

        Example:

        >>> lstm = keras_gated.LSTM(4)
        >>> x = np.random.rand(2, 6, 3).astype("float32")
        >>> probe = {"hidden": tf.zeros((2, 6, 4)), "cell": tf.zeros((2, 6, 4))}
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(probe)
        ...     with lstm.probe_states(probe):
        ...         loss = tf.reduce_sum(lstm(x))
        >>> tape.gradient(loss, probe)["cell"].shape
        TensorShape([2, 6, 4])
        """
        unknown = set(perturbations) - set(self.state_names)
        if unknown:
            raise ValueError(
                f"Layer '{self.name}' has states {self.state_names}. "
                f"Received perturbations for {sorted(unknown)}."
            )
        self._probes = dict(perturbations)
        try:
            yield
        finally:
            self._probes = None

    def _probe_tensors(self):
        """The active probes as time-major tensors in processing order."""
        if not self._probes:
            return {}
        tensors = {}
        for name, probe in self._probes.items():
            probe = ops.transpose(
                ops.cast(probe, self.compute_dtype), (1, 0, 2)
            )
            tensors[name] = (
                ops.flip(probe, axis=0) if self.go_backwards else probe
            )
        return tensors

    def _generic(self, projected, initial_state, mask, probes, recurrent_mask):
        """The portable loop over the cell's own `step` (any activation,
        recurrent dropout, `unroll`). Returns `(final_states, sequences)`
        with time-major sequences keyed like `_fused`'s."""
        wanted_states = []
        if self.return_sequences:
            wanted_states.append("hidden")
        if self.return_gates:
            wanted_states += list(self.state_sequences)
        indices = [self.state_names.index(name) for name in wanted_states]
        perturbations = []
        if probes:
            count = 1 + max(self.state_names.index(n) for n in probes)
            zeros = ops.zeros_like(projected[..., : self.cell.units])
            for name in self.state_names[:count]:
                perturbations.append(probes.get(name, zeros))

        def step(x_t, states, offsets):
            return self.cell.step(x_t, states, recurrent_mask, offsets)

        states, recorded, gates = run_recurrence(
            step,
            projected,
            initial_state,
            mask,
            unroll=self.unroll,
            record_states=indices,
            record_gates=self.cell.gate_names if self.return_gates else (),
            perturbations=perturbations,
        )
        sequences = dict(gates)
        sequences.update(zip(wanted_states, recorded))
        return states, sequences

    def _dropout_masks(self, sequences, initial_state, training):
        # Drawn on every call, as keras.layers.RNN does, so the random
        # stream stays in step with the built-in layer given the same seed.
        cell = self.cell
        input_mask = cell.get_dropout_mask(sequences[:, 0, :])
        recurrent_mask = cell.get_recurrent_dropout_mask(initial_state[0])
        cell.reset_dropout_mask()
        cell.reset_recurrent_dropout_mask()
        if not training:
            return None, None
        return input_mask, recurrent_mask

    def call(self, sequences, initial_state=None, mask=None, training=False):
        self._check_call_shape(sequences.shape)
        if initial_state is None:
            if self.stateful:
                initial_state = self.states
            else:
                initial_state = self.get_initial_state(ops.shape(sequences)[0])
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        if len(initial_state) != len(self.state_size):
            raise ValueError(
                f"Layer '{self.name}' expects initial_state to be a list of "
                f"{len(self.state_size)} tensors of shape (batch, "
                f"{self.cell.units}). Received {len(initial_state)} tensors."
            )
        initial_state = [
            ops.convert_to_tensor(state, dtype=self.compute_dtype)
            for state in initial_state
        ]
        input_mask, recurrent_mask = self._dropout_masks(
            sequences, initial_state, training
        )
        # Time-major from here on; masks of shape (batch, n) broadcast over
        # the leading time axis.
        inputs = ops.transpose(sequences, (1, 0, 2))
        if mask is not None:
            mask = ops.transpose(ops.cast(keras.tree.flatten(mask)[0], "bool"))
        if self.go_backwards:
            inputs = ops.flip(inputs, axis=0)
            if mask is not None:
                mask = ops.flip(mask, axis=0)
        probes = self._probe_tensors()
        # The default activations without recurrent dropout: the fast path
        # (loops compiled by XLA, analytic backward pass). It projects the
        # inputs itself, unless input dropout gives each gate its own, so
        # that its backward pass can hand out the inputs' gradient a
        # stretch of time at a time; it adds the bias at each step.
        # Anything else: the cell's own step in a generic loop.
        if not self.unroll and _tf_fused.supports(self.cell, recurrent_mask):
            wanted = ("hidden",) if self.return_sequences else ()
            if self.return_gates:
                wanted += tuple(self.sequence_names)
            input_kernel = self.cell.kernel
            if input_mask is not None:
                inputs = self.cell.project_inputs(
                    inputs, input_mask, add_bias=False
                )
                input_kernel = None
            # Batch-major sequences, as the layer returns them.
            states, sequences = self._fused(
                inputs, input_kernel, initial_state, mask, probes, wanted
            )
        else:
            projected = self.cell.project_inputs(inputs, input_mask)
            states, sequences = self._generic(
                projected, initial_state, mask, probes, recurrent_mask
            )
            sequences = {
                name: ops.transpose(sequence, (1, 0, 2))
                for name, sequence in sequences.items()
            }
        zero_output = self._zero_output_for_mask
        if self.return_sequences:
            output = masked_outputs(sequences["hidden"], mask, zero_output)
        else:
            output = masked_last_output(states[0], mask, zero_output)
        if self.stateful:
            for variable, state in zip(self.states, states):
                variable.assign(ops.cast(state, variable.dtype))
        result = [output]
        if self.return_state:
            result += states
        if self.return_gates:
            result.append(
                {name: sequences[name] for name in self.sequence_names}
            )
        return result[0] if len(result) == 1 else tuple(result)

    def get_config(self):
        config = {
            name: self.cell.get_config().get(name) for name in _CELL_ARGUMENTS
        }
        config.update(
            {
                "seed": self.cell.seed,
                "activity_regularizer": keras.regularizers.serialize(
                    self.activity_regularizer
                ),
                "return_sequences": self.return_sequences,
                "return_state": self.return_state,
                "go_backwards": self.go_backwards,
                "stateful": self.stateful,
                "unroll": self.unroll,
                "zero_output_for_mask": self._zero_output_for_mask,
                "return_gates": self.return_gates,
            }
        )
        return {**super().get_config(), **config}

    units = _from_cell("units")
    activation = _from_cell("activation")
    recurrent_activation = _from_cell("recurrent_activation")
    use_bias = _from_cell("use_bias")
    kernel_initializer = _from_cell("kernel_initializer")
    recurrent_initializer = _from_cell("recurrent_initializer")
    bias_initializer = _from_cell("bias_initializer")
    kernel_regularizer = _from_cell("kernel_regularizer")
    recurrent_regularizer = _from_cell("recurrent_regularizer")
    bias_regularizer = _from_cell("bias_regularizer")
    kernel_constraint = _from_cell("kernel_constraint")
    recurrent_constraint = _from_cell("recurrent_constraint")
    bias_constraint = _from_cell("bias_constraint")
    dropout = _from_cell("dropout")
    recurrent_dropout = _from_cell("recurrent_dropout")


_LAYER_ARGS_DOC = """
    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation for the candidate (and, in the LSTM, for
            c_t in h_t). Default: `"tanh"`; `None` means linear.
        recurrent_activation: Activation for the gates. Default:
            `"sigmoid"`.
        use_bias: Whether the layer uses a bias. Default: `True`.
        kernel_initializer: Initializer for `kernel`. Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `recurrent_kernel`. Default:
            `"orthogonal"`.
        bias_initializer: Initializer for `bias`. Default: `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers for the three weights. Default: `None`.
        activity_regularizer: Regularizer for the layer's output.
        kernel_constraint, recurrent_constraint, bias_constraint:
            Constraints for the three weights. Default: `None`.
        dropout: Float in [0, 1), fraction of the inputs to drop (one mask
            per sequence, reused at every step, as in Keras).
        recurrent_dropout: Float in [0, 1), fraction of h_{t-1} to drop.
        seed: Random seed for dropout; the same seed draws the same masks
            as the built-in layer.
        return_sequences: Return the output at every step, not only the
            last. Default: `False`.
        return_state: Also return the final states. Default: `False`.
        go_backwards: Process the sequence backwards and return the
            reversed sequence. Default: `False`.
        stateful: Carry the final states of each batch over as the initial
            states of the next; `reset_state()` zeroes them. Needs a static
            batch size. Default: `False`.
        unroll: Unroll the loop in Python (for short sequences of known
            length). Default: `False`.
        use_cudnn: Accepted for compatibility (`"auto"`, `True`, `False`)
            and ignored: the gates are always computed explicitly.
        return_gates: Also return the per-timestep gate sequences, as the
            last element of the outputs. Default: `False`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...),
            `implementation` (1 or 2) and `zero_output_for_mask`, as
            accepted by the built-in layer.

    Call arguments:
        inputs: A 3D tensor `(batch, timesteps, features)`.
        mask: Optional boolean `(batch, timesteps)`; `False` steps are
            skipped: states carry over, the output repeats the previous one
            (zeros inside `Bidirectional`), the gates are zero.
        training: Python boolean; dropout applies only in training.
        initial_state: Optional list of initial state tensors.
"""


@keras.saving.register_keras_serializable(package="keras_gated")
class LSTM(_GatedRNN):
    __doc__ = (
        """Long Short-Term Memory layer whose gates you can watch.

    A drop-in replacement for `keras.layers.LSTM` (TensorFlow backend): the
    same arguments, the same weights (`kernel`, `recurrent_kernel`, `bias`
    of the cell, gate order i, f, c, o), the same outputs to float32
    rounding, so `ours.set_weights(builtin.get_weights())` swaps it into a
    trained model. The equations are in `keras_gated.LSTMCell`. The inputs
    of all timesteps are projected in one matmul before the loop; each step
    then adds `h_{t-1} @ recurrent_kernel` and applies the gates.

    With `return_gates=True` the layer also returns, as the last element of
    its outputs, a dict of per-timestep sequences, each of shape
    `(batch, timesteps, units)` (the full sequence even when
    `return_sequences=False`):

    - `"input"`: input gate i_t;
    - `"forget"`: forget gate f_t;
    - `"candidate"`: candidate g_t (what the input gate lets into c_t);
    - `"output"`: output gate o_t;
    - `"cell"`: cell state c_t.

    `gates[k][:, t]` belongs to the same step as `outputs[:, t]` with
    `return_sequences=True`: with `go_backwards=True` both are in processing
    order (reversed). At masked steps the gates are zero and `"cell"` holds
    the carried-over state. `keras.layers.Bidirectional` cannot wrap a
    layer with `return_gates=True` (a `ValueError` says what to do).
"""
        + _LAYER_ARGS_DOC
        + """        unit_forget_bias: If `True` (default), add 1 to the
            forget-gate bias at initialization.

    Returns:
        `outputs` (`(batch, timesteps, units)` with `return_sequences`,
        else `(batch, units)`); with `return_state` also `h`, `c`; with
        `return_gates` also the gate dict, last: `outputs, gates`, or
        `outputs, h, c, gates`.

    Example:

    >>> x = np.random.rand(32, 10, 8).astype("float32")
    >>> lstm = keras_gated.LSTM(4, return_gates=True)
    >>> outputs, gates = lstm(x)
    >>> outputs.shape
    (32, 4)
    >>> sorted(gates)
    ['candidate', 'cell', 'forget', 'input', 'output']
    >>> gates["forget"].shape
    (32, 10, 4)

    Reference:
        Hochreiter & Schmidhuber, "Long Short-Term Memory", Neural
        Computation 9(8), 1997.
    """
    )

    sequence_names = LSTM_SEQUENCES
    state_sequences = ("cell",)
    state_names = ("hidden", "cell")

    def _fused(self, inputs, input_kernel, initial_state, mask, probes, wanted):
        return _tf_fused.lstm(
            inputs,
            initial_state[0],
            initial_state[1],
            self.cell.recurrent_kernel,
            input_kernel=input_kernel,
            input_bias=self.cell.input_bias(),
            mask=mask,
            perturbations=probes,
            wanted=wanted,
        )

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias=True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        use_cudnn="auto",
        return_gates=False,
        **kwargs,
    ):
        cell = LSTMCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            unit_forget_bias=unit_forget_bias,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            implementation=kwargs.pop("implementation", 2),
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="lstm_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            use_cudnn=use_cudnn,
            return_gates=return_gates,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )

    unit_forget_bias = _from_cell("unit_forget_bias")

    def get_config(self):
        return {
            **super().get_config(),
            "unit_forget_bias": self.unit_forget_bias,
        }


@keras.saving.register_keras_serializable(package="keras_gated")
class GRU(_GatedRNN):
    __doc__ = (
        """Gated Recurrent Unit layer whose gates you can watch.

    A drop-in replacement for `keras.layers.GRU` (TensorFlow backend): the
    same arguments, the same weights (gate order z, r, h; with
    `reset_after=True`, the default, a bias of shape `(2, 3 * units)`), the
    same outputs to float32 rounding. The equations, for both settings of
    `reset_after`, are in `keras_gated.GRUCell`.

    With `return_gates=True` the layer also returns, as the last element of
    its outputs, a dict of per-timestep sequences, each of shape
    `(batch, timesteps, units)` (the full sequence even when
    `return_sequences=False`):

    - `"update"`: update gate z_t (how much of h_{t-1} is kept);
    - `"reset"`: reset gate r_t;
    - `"candidate"`: candidate n_t.

    `gates[k][:, t]` belongs to the same step as `outputs[:, t]` with
    `return_sequences=True` (processing order with `go_backwards=True`).
    At masked steps the gates are zero. `keras.layers.Bidirectional` cannot
    wrap a layer with `return_gates=True` (a `ValueError` says what to do).
"""
        + _LAYER_ARGS_DOC
        + """        reset_after: Apply the reset gate after the recurrent
            matmul (`True`, default, cuDNN-compatible) or before (`False`).

    Returns:
        `outputs`; with `return_state` also `h`; with `return_gates` also
        the gate dict, last: `outputs, gates` or `outputs, h, gates`.

    Example:

    >>> x = np.random.rand(32, 10, 8).astype("float32")
    >>> gru = keras_gated.GRU(4, return_sequences=True, return_gates=True)
    >>> outputs, gates = gru(x)
    >>> outputs.shape
    (32, 10, 4)
    >>> sorted(gates)
    ['candidate', 'reset', 'update']

    Reference:
        Cho et al., "Learning Phrase Representations using RNN
        Encoder-Decoder for Statistical Machine Translation", EMNLP 2014.
    """
    )

    sequence_names = GRU_SEQUENCES
    state_names = ("hidden",)

    def _fused(self, inputs, input_kernel, initial_state, mask, probes, wanted):
        cell = self.cell
        recurrent_bias = None
        if cell.use_bias and cell.reset_after:
            recurrent_bias = cell.bias[1]
        return _tf_fused.gru(
            inputs,
            initial_state[0],
            cell.recurrent_kernel,
            input_kernel=input_kernel,
            input_bias=cell.input_bias(),
            recurrent_bias=recurrent_bias,
            reset_after=cell.reset_after,
            mask=mask,
            perturbations=probes,
            wanted=wanted,
        )

    def __init__(
        self,
        units,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        reset_after=True,
        use_cudnn="auto",
        return_gates=False,
        **kwargs,
    ):
        cell = GRUCell(
            units,
            activation=activation,
            recurrent_activation=recurrent_activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            reset_after=reset_after,
            seed=seed,
            implementation=kwargs.pop("implementation", 2),
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="gru_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            use_cudnn=use_cudnn,
            return_gates=return_gates,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )

    reset_after = _from_cell("reset_after")

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}
