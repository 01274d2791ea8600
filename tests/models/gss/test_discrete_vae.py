import keras
import numpy as np
import pytest

from keras_gss.models.gss.discrete_vae import DiscreteVAE

SMALL = dict(vocab_size=32, hidden_dim=8, blocks_per_group=1, group_count=3, init_dim=8)


def test_shapes_downsampling_and_dall_e_size():
    dvae = DiscreteVAE(**SMALL)
    images = np.random.default_rng(0).uniform(0.1, 0.9, (2, 16, 24, 3)).astype("float32")
    assert tuple(dvae.token_logits(images).shape) == (2, 4, 6, 32)
    tokens = dvae.encode(images)
    assert tokens.dtype == "int32" and dvae.downsampling == 4
    reconstruction = np.asarray(dvae.decode(tokens))
    assert reconstruction.shape == (2, 16, 24, 3)
    assert reconstruction.min() > 0 and reconstruction.max() < 1


def test_the_defaults_are_dall_e_size():
    # 53.8 M + 43.8 M parameters (spec §6).
    dall_e = DiscreteVAE()
    assert dall_e.count_params() == 97_616_006
    assert dall_e.encoder.count_params() == 53_786_240


def test_token_lookup_equals_the_one_hot_convolution():
    dvae = DiscreteVAE(**SMALL)
    tokens = np.random.default_rng(1).integers(0, 32, (2, 3, 3)).astype("int32")
    by_lookup = np.asarray(dvae.decoder_outputs(tokens))
    by_one_hot = np.asarray(dvae.decoder_outputs(np.eye(32, dtype="float32")[tokens]))
    np.testing.assert_allclose(by_lookup, by_one_hot, atol=1e-5)


def test_config_and_saved_model_round_trip(tmp_path):
    dvae = DiscreteVAE(**SMALL)
    images = np.random.default_rng(2).uniform(0.1, 0.9, (1, 8, 8, 3)).astype("float32")
    path = str(tmp_path / "dvae.keras")
    dvae.save(path)
    restored = keras.saving.load_model(path)
    assert restored.get_config() == dvae.get_config()
    np.testing.assert_allclose(np.asarray(restored.token_logits(images)),
                               np.asarray(dvae.token_logits(images)), atol=1e-6)


def test_sizes_that_do_not_divide_are_refused():
    with pytest.raises(ValueError, match="multiples of 4"):
        DiscreteVAE(**SMALL).encode(np.zeros((1, 10, 8, 3), "float32"))


def test_presets_name_an_architecture_and_a_directory_round_trips(tmp_path):
    dvae = DiscreteVAE.from_preset("gss_tokenizer_natural_crops", load_weights=False)
    assert (dvae.vocab_size, dvae.downsampling, dvae.name) == (
        1024, 4, "gss_tokenizer_natural_crops")
    assert DiscreteVAE.from_preset("gss_tokenizer_dall_e", load_weights=False).count_params() \
        == 97_616_006
    with pytest.raises(ValueError, match="ships as an architecture"):
        DiscreteVAE.from_preset("gss_tokenizer_natural_crops")
    with pytest.raises(ValueError, match="Did you mean 'gss_tokenizer_dall_e'"):
        DiscreteVAE.from_preset("gss_tokenizer_dalle")
    small = DiscreteVAE(**SMALL)
    small.save_to_preset(str(tmp_path / "tok"))
    restored = DiscreteVAE.from_preset(str(tmp_path / "tok"))
    images = np.random.default_rng(3).uniform(0.1, 0.9, (1, 8, 8, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(restored.decode(restored.encode(images))),
                                  np.asarray(small.decode(small.encode(images))))


def test_fit_trains_the_vq_form_and_its_logits_pick_the_nearest_code():
    from keras_gss.models.gss.stage_one import natural_image_crops

    crops = natural_image_crops(64, 16, seed=0)
    keras.utils.set_random_seed(0)
    dvae = DiscreteVAE(**dict(SMALL, init_dim=32), restart_interval=2)
    dvae.compile(optimizer=keras.optimizers.Adam(3e-3))
    losses = dvae.fit(crops, batch_size=16, epochs=6, verbose=0).history["loss"]
    assert losses[-1] < 0.9 * losses[0]
    # The encoder's logits now hold the codebook's distances: argmax = nearest code (numpy).
    features = np.asarray(dvae.encoder_features(crops[:4]))
    codebook = np.asarray(dvae.token_embedding.kernel)
    nearest = ((features[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)
    np.testing.assert_array_equal(np.asarray(dvae.encode(crops[:4])), nearest)
    # Inference decodes those codes exactly as training's straight-through forward pass.
    trained = dvae(crops[:4], training=True)["reconstruction"]
    np.testing.assert_allclose(np.asarray(dvae.decoder_outputs(dvae.encode(crops[:4]))),
                               np.asarray(trained), atol=1e-5)
    # Restarts keep codes in use (collapse would leave one or two of the 32).
    assert len(np.unique(np.asarray(dvae.encode(crops)))) > 8
    with pytest.raises(ValueError, match="init_dim=32"):
        DiscreteVAE(**SMALL).fit(crops, epochs=1, verbose=0)


def test_restarts_draw_on_arrays_and_tf_data_and_warn_for_other_inputs():
    import tensorflow as tf

    from keras_gss.models.gss.discrete_vae import _restart_sample
    from keras_gss.models.gss.stage_one import natural_image_crops

    images = np.random.default_rng(0).random((300, 8, 8, 3)).astype("float32")
    drawn = _restart_sample(images)
    assert drawn.shape == (256, 8, 8, 3) and len(np.unique(drawn[:, 0, 0, 0])) == 256
    batched = tf.data.Dataset.from_tensor_slices(images).batch(100)
    np.testing.assert_array_equal(_restart_sample(batched), images[:256])  # the first batches
    paired = tf.data.Dataset.from_tensor_slices((images[:10], images[:10])).batch(4)
    np.testing.assert_array_equal(_restart_sample(paired), images[:10])
    np.testing.assert_array_equal(
        _restart_sample(tf.data.Dataset.from_tensor_slices(images[:3])), images[:3])
    assert _restart_sample(iter([images])) is None

    # A codebook with one live code: with the optimiser still, only restarts revive the rest.
    crops = natural_image_crops(64, 16, seed=0)
    dvae = DiscreteVAE(**dict(SMALL, init_dim=32), restart_interval=1)
    dvae.compile(optimizer=keras.optimizers.SGD(0.0))
    dvae.encoder_features(crops[:1])
    codebook = np.full(dvae.token_embedding.kernel.shape, 1e3, "float32")
    codebook[0] = 0.0
    dvae.token_embedding.kernel.assign(codebook)
    dvae.fit(tf.data.Dataset.from_tensor_slices(crops).batch(16), epochs=1, verbose=0)
    assert len(np.unique(np.asarray(dvae.encode(crops)))) > 8
    with pytest.warns(UserWarning, match="codes will not restart"):
        dvae.fit(((batch,) for batch in [crops[:16]]), steps_per_epoch=1, epochs=1, verbose=0)
