"""The sequence layer shared by our LSTM, GRU and SimpleRNN.

`GatedRNN` owns a cell (`keras_gated.cells`) and does what
`keras.layers.RNN` does around it: argument and shape checks, masks,
direction, dropout masks, initial and stateful states, and assembling what
is returned, the gate sequences included. The loop itself is reached
through one hook, `inner_loop`: the TensorFlow fast path
(`keras_gated._tf`) where it computes exactly what the cell's `step`
computes, the portable loop over `step` (`keras_gated.recurrence`)
otherwise, and always on the JAX and PyTorch backends. Both hand back
the final states and batch-major sequences.
"""

import keras
from keras import ops

from keras_gated import _validation as check
from keras_gated._probes import ProbedStates
from keras_gated._stateful import StatefulStates
from keras_gated.recurrence import masked_last_output
from keras_gated.recurrence import masked_outputs
from keras_gated.recurrence import run_recurrence


def from_cell(name):
    """A read-only layer property forwarding to the cell's attribute."""
    return property(lambda self: getattr(self.cell, name))


class GatedRNN(ProbedStates, StatefulStates, keras.layers.Layer):
    """The loop, masking, state and output logic of our sequence layers.

    Subclasses set `sequence_names` (the keys of the gate dict),
    `state_sequences` (the states among them) and `state_names`.
    """

    sequence_names = ()
    state_sequences = ()
    state_names = ("hidden",)

    def __init__(
        self,
        cell,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        return_gates=False,
        zero_output_for_mask=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.cell = cell
        for name, value in (
            ("return_sequences", return_sequences),
            ("return_state", return_state),
            ("go_backwards", go_backwards),
            ("stateful", stateful),
            ("unroll", unroll),
            ("return_gates", return_gates),
        ):
            setattr(self, name, check.check_bool(name, value))
        self._zero_output_for_mask = check.check_bool(
            "zero_output_for_mask", zero_output_for_mask
        )
        state_size = cell.state_size
        self.state_size = (
            [state_size] if isinstance(state_size, int) else list(state_size)
        )
        self.supports_masking = True
        self._input_features = None

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
        features = self._input_features
        expected = f"(batch, timesteps, {features or 'features'})"
        if len(shape) != 3 or (
            features is not None
            and shape[-1] is not None
            and shape[-1] != features
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
            self._build_states(sequences_shape)

    def get_initial_state(self, batch_size):
        return self.cell.get_initial_state(batch_size=batch_size)

    def _check_call_shape(self, shape):
        self._check_input_shape(shape)
        if self.unroll and shape[1] is None:
            raise ValueError(
                f"Layer '{self.name}' has unroll=True and needs a known "
                "number of timesteps, e.g. keras.Input(shape=(timesteps, "
                f"features)). Received: inputs.shape={tuple(shape)}"
            )
        if shape[1] == 0:
            raise ValueError(
                f"Layer '{self.name}' needs sequences of at least one "
                f"timestep. Received: inputs.shape={tuple(shape)}"
            )
        states = self.states
        if self.stateful and states is not None and shape[0] is not None:
            if shape[0] != states[0].shape[0]:
                raise ValueError(
                    f"Layer '{self.name}' has stateful=True and was built "
                    f"for batches of {states[0].shape[0]}; its states carry "
                    "from one batch to the next, so every batch must have "
                    f"that size. Received: inputs.shape={tuple(shape)}"
                )

    def _check_mask(self, mask, shape):
        """A mask must be `(batch, timesteps)` like the inputs'."""
        mask_shape = tuple(keras.tree.flatten(mask)[0].shape)
        expected = tuple(shape[:2])
        if len(mask_shape) != 2 or any(
            m is not None and e is not None and m != e
            for m, e in zip(mask_shape, expected)
        ):
            raise ValueError(
                f"Layer '{self.name}' expects a mask of shape (batch, "
                f"timesteps) = {expected}, like its inputs'. Received: "
                f"mask.shape={mask_shape}"
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
            sequence = (batch, timesteps, units)
            shapes.append({name: sequence for name in self.sequence_names})
        return shapes[0] if len(shapes) == 1 else tuple(shapes)

    def compute_mask(self, _, mask):
        mask = keras.tree.flatten(mask)[0] if mask is not None else None
        output_mask = mask if self.return_sequences else None
        if not (self.return_state or self.return_gates):
            return output_mask
        extra = len(self.state_size) if self.return_state else 0
        extra += len(self.sequence_names) if self.return_gates else 0
        return [output_mask] + [None] * extra

    def _initial_state(self, sequences, initial_state):
        if initial_state is None:
            if self.stateful:
                # Copies of their values: JAX's loops take arrays, not
                # variables, and PyTorch's autograd must not see the
                # variables change when the final states are kept.
                return [
                    ops.copy(ops.cast(state, self.compute_dtype))
                    for state in self.states
                ]
            return self.get_initial_state(ops.shape(sequences)[0])
        if not isinstance(initial_state, (list, tuple)):
            initial_state = [initial_state]
        expected = f"(batch, {self.cell.units})"
        if len(initial_state) != len(self.state_size):
            raise ValueError(
                f"Layer '{self.name}' expects initial_state to be a list of "
                f"{len(self.state_size)} tensors of shape {expected}. "
                f"Received {len(initial_state)} tensors."
            )
        initial_state = [
            ops.convert_to_tensor(state, dtype=self.compute_dtype)
            for state in initial_state
        ]
        batch = sequences.shape[0]
        shapes = [tuple(state.shape) for state in initial_state]
        for shape in shapes:
            if (
                len(shape) != 2
                or shape[1] != self.cell.units
                or (None not in (batch, shape[0]) and shape[0] != batch)
            ):
                raise ValueError(
                    f"Layer '{self.name}' expects each initial state of "
                    f"shape {expected} with the inputs' batch size "
                    f"(inputs.shape={tuple(sequences.shape)}). Received: "
                    f"initial_state shapes {shapes}"
                )
        return initial_state

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

    def _time_major(self, sequences, mask):
        """Inputs `(timesteps, batch, features)` and mask `(timesteps,
        batch)` in processing order (reversed with go_backwards)."""
        inputs = ops.transpose(sequences, (1, 0, 2))
        if mask is not None:
            mask = ops.transpose(ops.cast(keras.tree.flatten(mask)[0], "bool"))
        if self.go_backwards:
            inputs = ops.flip(inputs, axis=0)
            if mask is not None:
                mask = ops.flip(mask, axis=0)
        return inputs, mask

    def _wanted(self):
        """The sequences the caller needs: h with return_sequences, the
        gate dict's with return_gates."""
        wanted = ("hidden",) if self.return_sequences else ()
        return wanted + (
            tuple(self.sequence_names) if self.return_gates else ()
        )

    def call(self, sequences, initial_state=None, mask=None, training=False):
        self._check_call_shape(sequences.shape)
        if mask is not None:
            self._check_mask(mask, sequences.shape)
        if not keras.backend.is_float_dtype(sequences.dtype):
            # Integer inputs, cast as the built-in layers cast them.
            sequences = ops.cast(sequences, self.compute_dtype)
        initial_state = self._initial_state(sequences, initial_state)
        input_mask, recurrent_mask = self._dropout_masks(
            sequences, initial_state, training
        )
        inputs, mask = self._time_major(sequences, mask)
        states, sequences = self.inner_loop(
            inputs, initial_state, mask, input_mask, recurrent_mask
        )
        if self.stateful:
            self._keep_states(states)
        return self._assemble(states, sequences, mask)

    def inner_loop(
        self, inputs, initial_state, mask, input_mask, recurrent_mask
    ):
        """The one hook between the layer and a loop.

        Args:
            inputs: time-major `(timesteps, batch, features)`, in
                processing order.
            initial_state: list of `(batch, units)` tensors.
            mask: None or boolean `(timesteps, batch)`, processing order.
            input_mask, recurrent_mask: the dropout masks in training, else
                None.

        Returns:
            `(final_states, sequences)`: the states after the last step and
            a dict of batch-major `(batch, timesteps, units)` sequences
            holding at least those of `_wanted()`.
        """
        wanted = self._wanted()
        probes = self._probe_tensors()
        step_probe = self._step_probe_tensor()
        if step_probe is not None:
            recorded = ("hidden",) + tuple(self.cell.gate_names)
            wanted += tuple(n for n in recorded if n not in wanted)
        cell = self.cell
        projected = None
        if input_mask is not None or step_probe is not None:
            # Dropped-out inputs (one mask per gate with implementation=1),
            # or inputs whose projection is probed, are projected ahead.
            projected = cell.project_inputs(inputs, input_mask, add_bias=False)
            if step_probe is not None:
                projected = projected + step_probe
        description = self._fast_path(recurrent_mask)
        if description is None:
            states, sequences = self._portable_loop(
                inputs,
                projected,
                initial_state,
                mask,
                probes,
                recurrent_mask,
                wanted,
            )
        else:
            weights = {
                "recurrent_kernel": cell.recurrent_kernel,
                "input_bias": cell.input_bias(),
                "recurrent_bias": cell.recurrent_bias(),
            }
            if projected is None:
                weights["input_kernel"] = cell.kernel
            from keras_gated import _tf

            states, sequences = _tf.run(
                description,
                inputs if projected is None else projected,
                initial_state,
                weights,
                mask,
                probes,
                wanted,
            )
        if step_probe is not None:
            self._record_step(
                inputs=inputs,
                mask=mask,
                input_mask=input_mask,
                recurrent_mask=recurrent_mask,
                initial_state=initial_state[0],
                sequences={
                    name: ops.transpose(sequences[name], (1, 0, 2))
                    for name in recorded
                },
            )
        return states, sequences

    def _fast_path(self, recurrent_mask):
        """The TensorFlow fast path's description of the cell, or None:
        off TensorFlow, with `unroll`, recurrent dropout, or a cell it does
        not describe (other activations)."""
        if (
            self.unroll
            or recurrent_mask is not None
            or keras.backend.backend() != "tensorflow"
        ):
            return None
        from keras_gated import _tf

        return _tf.describe(self.cell)

    def _portable_loop(
        self, inputs, projected, initial_state, mask, probes, dropout, wanted
    ):
        """The cell's own `step` in the generic loop (any activation,
        recurrent dropout, `unroll`), recording the `wanted` sequences.

        `projected` is the inputs' projection without bias, or None: then
        the inputs are projected ahead, or on JAX by each step (XLA on the
        CPU runs JAX's scan twice as fast projecting x_t inside each step
        as slicing a projection made ahead)."""
        per_step = (
            projected is None
            and not probes
            and keras.backend.backend() == "jax"
        )
        if per_step:
            projected = inputs
        elif projected is None:
            projected = self.cell.project_inputs(inputs)
        elif self.cell.input_bias() is not None:
            projected = projected + self.cell.input_bias()
        recorded = [n for n in self.state_names if n in wanted]
        perturbations = []
        if probes:
            count = 1 + max(self.state_names.index(n) for n in probes)
            zeros = ops.zeros_like(projected[..., : self.cell.units])
            for name in self.state_names[:count]:
                perturbations.append(probes.get(name, zeros))

        def step(x_t, states, offsets):
            if per_step:
                x_t = self.cell.project_inputs(x_t)
            return self.cell.step(x_t, states, dropout, offsets)

        states, recorded_sequences, gates = run_recurrence(
            step,
            projected,
            initial_state,
            mask,
            unroll=self.unroll,
            record_states=[self.state_names.index(n) for n in recorded],
            record_gates=[g for g in self.cell.gate_names if g in wanted],
            perturbations=perturbations,
        )
        sequences = dict(gates)
        sequences.update(zip(recorded, recorded_sequences))
        return states, {
            name: ops.transpose(sequence, (1, 0, 2))
            for name, sequence in sequences.items()
        }

    def _repeats_state(self):
        """Whether a masked step outputs the carried state h, as Keras'
        JAX backend does in its scan (`unroll=False`): before the first
        valid step that is the initial state, where the other backends,
        and JAX's unrolled loop, output zeros."""
        return keras.backend.backend() == "jax" and not self.unroll

    def _assemble(self, states, sequences, mask):
        """What the layer returns: outputs, states, gates, as asked."""
        zero_output = self._zero_output_for_mask
        if mask is not None and not zero_output and self._repeats_state():
            mask = None
        if self.return_sequences:
            output = masked_outputs(sequences["hidden"], mask, zero_output)
        else:
            output = masked_last_output(states[0], mask, zero_output)
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
            name: self.cell.get_config().get(name)
            for name in self.cell_arguments
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

    cell_arguments = (
        "units",
        "activation",
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
    """The cell's constructor arguments that the layer's config carries."""

    units = from_cell("units")
    activation = from_cell("activation")
    use_bias = from_cell("use_bias")
    kernel_initializer = from_cell("kernel_initializer")
    recurrent_initializer = from_cell("recurrent_initializer")
    bias_initializer = from_cell("bias_initializer")
    kernel_regularizer = from_cell("kernel_regularizer")
    recurrent_regularizer = from_cell("recurrent_regularizer")
    bias_regularizer = from_cell("bias_regularizer")
    kernel_constraint = from_cell("kernel_constraint")
    recurrent_constraint = from_cell("recurrent_constraint")
    bias_constraint = from_cell("bias_constraint")
    dropout = from_cell("dropout")
    recurrent_dropout = from_cell("recurrent_dropout")
