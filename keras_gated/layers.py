"""LSTM, GRU and SimpleRNN sequence layers: drop-ins for Keras', with gates.

Each class is a thin subclass of `keras_gated.rnn.GatedRNN` that builds its
cell (`keras_gated.cells`) from Keras' constructor arguments and names its
states and gate sequences. Everything a sequence layer does (masks,
direction, dropout, states, the loop through `inner_loop`, the returned
gates) is `GatedRNN`'s.
"""

import keras

from keras_gated import _validation as check
from keras_gated.cells import GRUCell
from keras_gated.cells import LSTMCell
from keras_gated.cells import SimpleRNNCell
from keras_gated.gates import GRU_SEQUENCES
from keras_gated.gates import LSTM_SEQUENCES
from keras_gated.gates import SIMPLE_RNN_SEQUENCES
from keras_gated.rnn import GatedRNN
from keras_gated.rnn import from_cell


class _GatedLayer(GatedRNN):
    """What the LSTM and GRU layers add: the gates' recurrent activation,
    and `use_cudnn`, accepted like the built-in's and ignored."""

    cell_arguments = GatedRNN.cell_arguments + ("recurrent_activation",)

    def __init__(self, cell, use_cudnn="auto", **kwargs):
        super().__init__(cell, **kwargs)
        self.use_cudnn = check.check_choice(
            "use_cudnn", use_cudnn, ("auto", True, False)
        )

    recurrent_activation = from_cell("recurrent_activation")


@keras.saving.register_keras_serializable(package="keras_gated")
class LSTM(_GatedLayer):
    """Long Short-Term Memory layer whose gates you can watch.

    A drop-in replacement for `keras.layers.LSTM` on every Keras backend:
    the same arguments, the same weights (`kernel`, `recurrent_kernel`, `bias`
    of the cell, gate order i, f, c, o), the same outputs to float32
    rounding, so `ours.set_weights(builtin.get_weights())` swaps it into a
    trained model. The equations are in `keras_gated.LSTMCell`; with
    Keras' default activations the recurrence runs compiled on TensorFlow,
    each step projecting its input x_t together with the recurrent matmul;
    on JAX and PyTorch the cell's equations run in `keras.ops.scan` (see
    docs/architecture.md).

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

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation for the candidate and for c_t in h_t.
            Default: `"tanh"`; `None` means linear.
        recurrent_activation: Activation for the gates. Default:
            `"sigmoid"`.
        use_bias: Whether the layer uses a bias. Default: `True`.
        kernel_initializer: Initializer for `kernel`. Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `recurrent_kernel`. Default:
            `"orthogonal"`.
        bias_initializer: Initializer for `bias`. Default: `"zeros"`.
        unit_forget_bias: If `True` (default), add 1 to the forget-gate
            bias at initialization.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers for the three weights. Default: `None`.
        activity_regularizer: Regularizer for the layer's outputs and
            states (not the gates).
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
            `implementation` (0, 1 or 2) and `zero_output_for_mask`, as
            accepted by the built-in layer.

    Call arguments:
        inputs: A 3D tensor `(batch, timesteps, features)`; integer inputs
            are cast to the layer's dtype.
        mask: Optional boolean `(batch, timesteps)`; `False` steps are
            skipped: states carry over, the output repeats the previous one
            (zeros inside `Bidirectional`), the gates are zero.
        training: Python boolean; dropout applies only in training.
        initial_state: Optional list of initial state tensors `[h, c]`.

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

    sequence_names = LSTM_SEQUENCES
    state_sequences = ("cell",)
    state_names = ("hidden", "cell")

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

    unit_forget_bias = from_cell("unit_forget_bias")

    def get_config(self):
        return {
            **super().get_config(),
            "unit_forget_bias": self.unit_forget_bias,
        }


@keras.saving.register_keras_serializable(package="keras_gated")
class GRU(_GatedLayer):
    """Gated Recurrent Unit layer whose gates you can watch.

    A drop-in replacement for `keras.layers.GRU` on every Keras backend:
    the same arguments, the same weights (gate order z, r, h; with
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

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation for the candidate. Default: `"tanh"`;
            `None` means linear.
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
        activity_regularizer: Regularizer for the layer's outputs and
            states (not the gates).
        kernel_constraint, recurrent_constraint, bias_constraint:
            Constraints for the three weights. Default: `None`.
        dropout: Float in [0, 1), fraction of the inputs to drop (one mask
            per sequence, reused at every step, as in Keras).
        recurrent_dropout: Float in [0, 1), fraction of h_{t-1} to drop.
        seed: Random seed for dropout; the same seed draws the same masks
            as the built-in layer.
        return_sequences: Return the output at every step, not only the
            last. Default: `False`.
        return_state: Also return the final state. Default: `False`.
        go_backwards: Process the sequence backwards and return the
            reversed sequence. Default: `False`.
        stateful: Carry the final state of each batch over as the initial
            state of the next; `reset_state()` zeroes it. Needs a static
            batch size. Default: `False`.
        unroll: Unroll the loop in Python (for short sequences of known
            length). Default: `False`.
        reset_after: Apply the reset gate after the recurrent matmul
            (`True`, default, cuDNN-compatible) or before (`False`).
        use_cudnn: Accepted for compatibility (`"auto"`, `True`, `False`)
            and ignored: the gates are always computed explicitly.
        return_gates: Also return the per-timestep gate sequences, as the
            last element of the outputs. Default: `False`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...),
            `implementation` (0, 1 or 2) and `zero_output_for_mask`, as
            accepted by the built-in layer.

    Call arguments:
        inputs: A 3D tensor `(batch, timesteps, features)`; integer inputs
            are cast to the layer's dtype.
        mask: Optional boolean `(batch, timesteps)`; `False` steps are
            skipped: the state carries over, the output repeats the
            previous one (zeros inside `Bidirectional`), the gates are zero.
        training: Python boolean; dropout applies only in training.
        initial_state: Optional initial state `[h]`.

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

    sequence_names = GRU_SEQUENCES

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

    reset_after = from_cell("reset_after")

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}


@keras.saving.register_keras_serializable(package="keras_gated")
class SimpleRNN(GatedRNN):
    """Fully connected (vanilla) RNN layer that shows its pre-activations.

    A drop-in replacement for `keras.layers.SimpleRNN` on every Keras
    backend: the same arguments, the same weights (`kernel`
    `(features, units)`, `recurrent_kernel` `(units, units)`, `bias`
    `(units,)`), the same outputs to float32 rounding. It is the vanilla
    RNN of the theory, h_t = tanh(x_t W + h_{t-1} U + b) (equations in
    `keras_gated.SimpleRNNCell`), run by the same loops as our LSTM and
    GRU on every backend, so the gradient logger and the comparisons
    measure it exactly like them.

    A vanilla RNN has no gates. With `return_gates=True` the layer returns,
    as the last element of its outputs, the one sequence it has in their
    place, each `(batch, timesteps, units)`:

    - `"pre_activation"`: z_t = x_t W + h_{t-1} U + b, so that
      h_t = tanh(z_t). Its saturation (|z_t| large, tanh'(z_t) = 1 - h_t^2
      near 0) is what makes the step's Jacobian diag(1 - h_t^2) U^T small.

    The activation itself, h_t, is the layer's output with
    `return_sequences=True`. At masked steps z_t is zero.
    `keras.layers.Bidirectional` cannot wrap a layer with
    `return_gates=True` (a `ValueError` says what to do).

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation of the pre-activation. Default: `"tanh"`;
            `None` means linear.
        use_bias: Whether the layer uses a bias. Default: `True`.
        kernel_initializer: Initializer for `kernel`. Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for `recurrent_kernel`. Default:
            `"orthogonal"`.
        bias_initializer: Initializer for `bias`. Default: `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer:
            Regularizers for the three weights. Default: `None`.
        activity_regularizer: Accepted and, as by `keras.layers.SimpleRNN`
            (Keras 3), not applied: the built-in takes the argument but
            never hands it on, and a drop-in must train the same.
        kernel_constraint, recurrent_constraint, bias_constraint:
            Constraints for the three weights. Default: `None`.
        dropout: Float in [0, 1), fraction of the inputs to drop (one mask
            per sequence, reused at every step, as in Keras).
        recurrent_dropout: Float in [0, 1), fraction of h_{t-1} to drop.
        seed: Random seed for dropout; the same seed draws the same masks
            as the built-in layer.
        return_sequences: Return the output at every step, not only the
            last. Default: `False`.
        return_state: Also return the final state. Default: `False`.
        go_backwards: Process the sequence backwards and return the
            reversed sequence. Default: `False`.
        stateful: Carry the final state of each batch over as the initial
            state of the next; `reset_state()` zeroes it. Needs a static
            batch size. Default: `False`.
        unroll: Unroll the loop in Python (for short sequences of known
            length). Default: `False`.
        return_gates: Also return the per-timestep pre-activations, as the
            last element of the outputs. Default: `False`.
        **kwargs: Base layer arguments (`name`, `dtype`, `trainable`, ...)
            and `zero_output_for_mask`, as accepted by the built-in layer.

    Call arguments:
        inputs: A 3D tensor `(batch, timesteps, features)`; integer inputs
            are cast to the layer's dtype.
        mask: Optional boolean `(batch, timesteps)`; `False` steps are
            skipped: the state carries over, the output repeats the
            previous one (zeros inside `Bidirectional`), z_t is zero.
        training: Python boolean; dropout applies only in training.
        initial_state: Optional initial state `[h]`.

    Returns:
        `outputs`; with `return_state` also `h`; with `return_gates` also
        the dict `{"pre_activation": z}`, last: `outputs, gates` or
        `outputs, h, gates`.

    Example:

    >>> x = np.random.rand(32, 10, 8).astype("float32")
    >>> rnn = keras_gated.SimpleRNN(4, return_sequences=True, return_gates=True)
    >>> outputs, gates = rnn(x)
    >>> outputs.shape
    (32, 10, 4)
    >>> gates["pre_activation"].shape
    (32, 10, 4)

    Reference:
        Elman, "Finding Structure in Time", Cognitive Science 14(2), 1990;
        Bengio, Simard & Frasconi, "Learning Long-Term Dependencies with
        Gradient Descent is Difficult", IEEE Trans. Neural Networks 5(2),
        1994.
    """

    sequence_names = SIMPLE_RNN_SEQUENCES

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
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        unroll=False,
        seed=None,
        return_gates=False,
        **kwargs,
    ):
        cell = SimpleRNNCell(
            units,
            activation=activation,
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
            seed=seed,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="simple_rnn_cell",
        )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            unroll=unroll,
            return_gates=return_gates,
            **kwargs,
        )
