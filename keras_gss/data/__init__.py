"""Datasets: benchmark readers (official layouts), augmentation, generated scenes, negatives."""

from keras_gss.data.colour_scenes import colour_scenes
from keras_gss.data.digit_scenes import DigitScenes
from keras_gss.data.negatives import NEGATIVE_INDEX
from keras_gss.data.negatives import object_negatives
from keras_gss.data.negatives import paste_negatives
from keras_gss.data.normalization import normalize_images
from keras_gss.data.readers import READERS
from keras_gss.data.readers import build_dataset
from keras_gss.data.readers import read_ade20k
from keras_gss.data.readers import read_cityscapes
from keras_gss.data.readers import read_coco_stuff10k
from keras_gss.data.readers import read_dataset
from keras_gss.data.readers import read_fishyscapes_laf
from keras_gss.data.readers import read_road_anomaly
from keras_gss.data.readers import read_smiyc
from keras_gss.data.readers import read_streethazards
from keras_gss.data.augmentation import Compose
from keras_gss.data.augmentation import JointTransform
from keras_gss.data.augmentation import PhotometricDistortion
from keras_gss.data.augmentation import RandomCrop
from keras_gss.data.augmentation import RandomFlip
from keras_gss.data.augmentation import RandomScale
from keras_gss.data.augmentation import training_augmentation
