"""Metrics: mIoU and open-mIoU, anomaly AUROC / AP / FPR95, calibration."""

from keras_gss.metrics.anomaly import BinnedAnomalyMetrics
from keras_gss.metrics.anomaly import anomaly_metrics
from keras_gss.metrics.anomaly import open_set_recognition_metrics
from keras_gss.metrics.anomaly import per_image_anomaly_metrics
from keras_gss.metrics.anomaly import roc_pr_curves
from keras_gss.metrics.calibration import calibration_error
from keras_gss.metrics.calibration import expected_calibration_error
from keras_gss.metrics.calibration import reliability
from keras_gss.metrics.calibration import reliability_from_sums
from keras_gss.metrics.calibration import reliability_sums
from keras_gss.metrics.segmentation import MeanIoU
from keras_gss.metrics.segmentation import confusion_matrix
from keras_gss.metrics.segmentation import iou_from_confusion
from keras_gss.metrics.segmentation import mean_iou
from keras_gss.metrics.segmentation import open_mean_iou
