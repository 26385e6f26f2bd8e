"""The state variables of a `stateful=True` sequence layer."""

import keras
from keras import ops


class _Untracked:
    """Holds a value out of sight of Keras' attribute tracking.

    The state variables of a stateful layer are not weights (the built-in
    layers keep them out of `layer.weights` too), so `get_weights` and
    weight files stay those of the built-in layer.
    """

    def __init__(self, value):
        self.value = value


class StatefulStates:
    """`states`, `reset_state` and the variables behind them."""

    _state_store = _Untracked(None)

    @property
    def states(self):
        """The state variables of a stateful layer (None otherwise)."""
        return self._state_store.value

    def _build_states(self, sequences_shape):
        if self.states is not None:
            self.reset_state()
            return
        if sequences_shape[0] is None:
            raise ValueError(
                f"Layer '{self.name}' has stateful=True and needs a "
                "static batch size, e.g. keras.Input(batch_size=...). "
                f"Received: inputs.shape={tuple(sequences_shape)}"
            )
        self._state_store = _Untracked(
            [
                keras.Variable(
                    value,
                    trainable=False,
                    dtype=self.variable_dtype,
                    name="rnn_state",
                )
                for value in self.get_initial_state(sequences_shape[0])
            ]
        )

    def _keep_states(self, states):
        """Stores the final states as the next call's initial states."""
        for variable, state in zip(self.states, states):
            variable.assign(ops.cast(state, variable.dtype))

    def reset_state(self):
        if self.states is not None:
            for state in self.states:
                state.assign(ops.zeros_like(state.value))

    def reset_states(self):
        self.reset_state()
