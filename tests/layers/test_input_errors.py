import numpy as np
import pytest
from keras import ops

from keras_gss.layers import InputErrors


def test_counted_errors_raise_once():
    errors = InputErrors(num_classes=2)
    errors.add_counts(invalid_labels=3, invalid_label_value=9)
    with pytest.raises(ValueError, match=r"`y` holds class ids outside \[0, 2\).*\[9\]"):
        errors.raise_for_errors()
    errors.raise_for_errors()  # counters were reset
    errors.add_counts(nonfinite_features=5)
    with pytest.raises(ValueError, match="5 pixel embeddings were non-finite"):
        errors.raise_for_errors()


def test_record_counts_labels_and_images_then_raises():
    errors = InputErrors(num_classes=3)
    images = np.zeros((2, 1, 3, 3), "float32")
    errors.record(images, np.array([[[0, 2, 255]], [[4, -1, 1]]]))
    np.testing.assert_array_equal(ops.convert_to_numpy(errors.counts), [2, 4, 0, 0])
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*\[4\]"):
        errors.raise_for_errors()
    errors.record(images, np.array([0, 1, 2, 255]))
    errors.raise_for_errors()  # nothing counted, nothing raised
    images[1, 0, 2, 1] = np.nan
    images[0, 0, 0, 0] = np.inf
    errors.record(images, np.zeros((2, 1, 3), int))
    with pytest.raises(ValueError, match="`images` held 2 non-finite values"):
        errors.raise_for_errors()


def test_counts_are_never_saved(tmp_path):
    import keras

    errors = InputErrors(num_classes=3)
    errors.add_counts(invalid_labels=1, invalid_label_value=7)
    store = {}
    errors.save_own_variables(store)
    assert store == {}
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(errors))
    assert clone.num_classes == 3 and clone.ignore_index == 255
