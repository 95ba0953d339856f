"""Keras 3 model builders: an MLP for tabular rows, a CNN for images."""

from __future__ import annotations

MODELS = ("auto", "mlp", "cnn")


def build_model(config, input_shape: tuple, task: str, n_classes: int, image_scale: float = 1.0,
                target_mean: float = 0.0, target_std: float = 1.0):
    import keras

    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    inputs = keras.Input(shape=input_shape, name="features")
    if config.resolved_model == "cnn":
        x = _cnn_body(keras, inputs, config, image_scale, regularizer)
        outputs = output_head(keras, x, task, n_classes, target_mean, target_std)
    elif config.ensemble_size > 1:
        outputs = _mlp_ensemble(keras, inputs, config, regularizer, task, n_classes, target_mean, target_std)
    else:
        x = _mlp_body(keras, inputs, config, regularizer)
        outputs = output_head(keras, x, task, n_classes, target_mean, target_std)
    return keras.Model(inputs, outputs, name=f"fittrack_{config.resolved_model}")


def _mlp_body(keras, x, config, regularizer):
    for i in range(config.layers):
        x = keras.layers.Dense(config.units, activation="relu", kernel_regularizer=regularizer, name=f"dense_{i}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"dropout_{i}")(x)
    return x


def _mlp_ensemble(keras, inputs, config, regularizer, task, n_classes, target_mean, target_std):
    """`ensemble_size` MLPs side by side in one network, each initialised on its own, their logits
    averaged before the output activation (an MLP^k ensemble, as in Gorishniy et al.'s TabM, 2024):
    on a few hundred rows one MLP's test score swings with its initialisation, and the members
    together cost one fit, one checkpoint and one model, with Keras's own layers only.

    The members are batched, not k separate stacks of layers: the first layer is one Dense of
    k x units (the members share only their input), every later layer an EinsumDense with a kernel
    per member. Each member's kernels are initialised as Keras's Glorot initialiser would a
    member's own Dense layer, so the members are k MLPs of `layers` x `units`, at a fraction of the
    per-layer overhead that dominates small fits on a CPU."""
    k, units, fan_in = config.ensemble_size, config.units, inputs.shape[-1]
    n_out = output_units(task, n_classes)
    x = keras.layers.Dense(k * units, activation="relu", kernel_regularizer=regularizer, name="members_dense_0",
                           kernel_initializer=_member_glorot(keras, fan_in, units, k))(inputs)
    x = keras.layers.Reshape((k, units), name="members")(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="members_dropout_0")(x)
    for i in range(1, config.layers):
        x = keras.layers.EinsumDense("bkd,kde->bke", output_shape=(k, units), bias_axes="ke", activation="relu",
                                     kernel_initializer=_member_glorot(keras, units, units, k),
                                     kernel_regularizer=regularizer,
                                     name=f"members_dense_{i}")(x)
        if config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"members_dropout_{i}")(x)
    x = keras.layers.EinsumDense("bkd,kdo->bko", output_shape=(k, n_out), bias_axes="ko", dtype="float32",
                                 kernel_initializer=_member_glorot(keras, units, n_out, k), name=MEMBERS_HEAD)(x)
    x = keras.layers.GlobalAveragePooling1D(dtype="float32", name="ensemble_mean")(x)
    return output_activation(keras, x, task, n_classes, target_mean, target_std)


def _member_glorot(keras, fan_in: int, fan_out: int, members: int):
    """Glorot uniform for one member's layer (variance 2 / (fan_in + fan_out)) on a batched kernel:
    Keras counts the member axis among the output units, both of the Dense of k x units and of an
    EinsumDense 'bkd,kde->bke' (tests/test_models.py measures the variance)."""
    scale = (fan_in + members * fan_out) / (fan_in + fan_out)
    return keras.initializers.VarianceScaling(scale=scale, mode="fan_avg", distribution="uniform")


def _cnn_body(keras, x, config, image_scale, regularizer):
    # The network takes raw pixels: scaling is part of it, so the logged model needs no preprocessor.
    x = keras.layers.Rescaling(1.0 / image_scale, name="rescale")(x)
    if len(x.shape) == 3:
        x = keras.layers.Reshape((*x.shape[1:], 1), name="add_channel")(x)
    if config.augment > 0:
        # Active only while fitting: a served model sees the image as it is.
        x = keras.layers.RandomTranslation(config.augment, config.augment, fill_mode="constant",
                                           seed=config.seed, name="augment")(x)
    filters = config.units
    for i in range(config.layers):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation=None if config.batch_norm else "relu",
                                kernel_regularizer=regularizer, name=f"conv_{i}")(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization(momentum=config.batch_norm_momentum, name=f"batch_norm_{i}")(x)
            x = keras.layers.Activation("relu", name=f"relu_{i}")(x)
        if x.shape[1] >= 2 and x.shape[2] >= 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(x)
        filters *= 2
    x = keras.layers.Flatten(name="flatten")(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="dropout_flat")(x)
    x = keras.layers.Dense(config.units * 2, activation="relu", kernel_regularizer=regularizer, name="dense")(x)
    if config.dropout > 0:
        x = keras.layers.Dropout(config.dropout, name="dropout_dense")(x)
    return x


#: The ensemble's output layer: every member's logits, (batch, members, outputs).
MEMBERS_HEAD = "members_logits"


def head_input(keras, network):
    """What a new output head goes on: the input of the network's last Dense layer, or, for an
    ensemble, every member's last hidden layer side by side (not one member alone)."""
    members = [layer for layer in network.layers if layer.name == MEMBERS_HEAD]
    if members:
        return keras.layers.Flatten(name="members_features")(members[0].input)
    dense = [layer for layer in network.layers if isinstance(layer, keras.layers.Dense)]
    return dense[-1].input if dense else None


def output_head(keras, x, task, n_classes, target_mean=0.0, target_std=1.0):
    """The output layer(s) for a task, on top of `x` (also the new head of a transfer run)."""
    # float32 outputs keep the loss stable under mixed precision.
    if task == "regression":
        x = keras.layers.Dense(1, dtype="float32", name="output")(x)
        return output_activation(keras, x, task, n_classes, target_mean, target_std)
    if n_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="output")(x)
    return keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="output")(x)


def output_units(task: str, n_classes: int) -> int:
    return 1 if task == "regression" or n_classes == 2 else n_classes


def output_activation(keras, x, task, n_classes, target_mean=0.0, target_std=1.0):
    """Logits (or a standardised regression output) to what the loss and the user take."""
    if task == "regression":
        # Predictions come out in the target's own units, so logged mse/mae mean what they say.
        return keras.layers.Rescaling(scale=target_std, offset=target_mean, dtype="float32", name="target_units")(x)
    activation = "sigmoid" if n_classes == 2 else "softmax"
    return keras.layers.Activation(activation, dtype="float32", name="output")(x)


def compile_model(model, config, task: str, n_classes: int, iterations_per_epoch: int = 0):
    """Compile with the loss only: every epoch's metrics are scikit-learn's on the epoch's outputs
    (tracking.callbacks.EpochEvaluation, which pipelines.fit places), not Keras's streaming ones.
    `iterations_per_epoch`: for a fit, the steps an epoch takes (the EMA's horizon is counted in them)."""
    model.compile(
        optimizer=make_optimizer(config, iterations_per_epoch),
        loss=make_loss(task, n_classes, config.label_smoothing),
        jit_compile=bool(config.xla),
    )


def make_loss(task: str, n_classes: int, label_smoothing: float = 0.0):
    """The training objective: mse, or the cross-entropy against labels smoothed by `label_smoothing`."""
    import keras

    if task == "regression":
        return keras.losses.MeanSquaredError(name="mse")
    if n_classes == 2:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing, name="binary_crossentropy")
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, name="categorical_crossentropy")


def ema_momentum(config, iterations_per_epoch: int) -> float:
    """Keras's `ema_momentum` for a CNN's average over about `config.ema_epochs` epochs of steps (0: no
    EMA, and none for an MLP)."""
    steps = config.ema_epochs * iterations_per_epoch
    return 1.0 - 1.0 / steps if config.resolved_model == "cnn" and steps > 1 else 0.0


def make_optimizer(config, iterations_per_epoch: int = 0):
    """The optimizer, with Keras's EMA of the weights where `config.ema_epochs` asks for it (given the
    steps an epoch takes: a compile for evaluation alone passes none)."""
    import keras

    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": lambda **kwargs: keras.optimizers.SGD(momentum=0.9, **kwargs),
        "rmsprop": keras.optimizers.RMSprop,
        "nadam": keras.optimizers.Nadam,
    }
    momentum = ema_momentum(config, iterations_per_epoch)
    averaging = {"use_ema": True, "ema_momentum": momentum} if momentum > 0 else {}
    return optimizers[config.optimizer](learning_rate=config.learning_rate, **averaging)


OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")
