"""GSS zoo records: the segmenters (layout in `keras_gss.models.preset_records`) and the
frozen tokenizers they read (`TOKENIZER_PRESETS`, loaded by `DiscreteVAE.from_preset`)."""

from keras_gss.models.preset_records import DIGITSCENES_BACKBONE
from keras_gss.models.preset_records import zoo_record

_PAPER = "Chen et al., Generative Semantic Segmentation (CVPR 2023)"
_SCORE = {"score": "anomaly_score",
          "definition": "1 - max_z p(z | x), the token prior's confidence (ours; GSS has no "
                        "anomaly score)"}

# Tokenizers: the architecture (`DiscreteVAE` arguments) and where the frozen weights come from.
TOKENIZER_PRESETS = {
    "gss_tokenizer_dall_e": {
        "description": "DALL-E's dVAE (8192 tokens, 8x down-sampling, 97.6 M parameters), "
                       "the tokenizer GSS uses frozen.",
        "config": {"vocab_size": 8192, "hidden_dim": 256, "blocks_per_group": 2,
                   "group_count": 4, "init_dim": 128},
        "weights": "OpenAI's released encoder.pkl and decoder.pkl (github.com/openai/DALL-E), "
                   "converted with keras_gss.convert.dall_e(encoder, decoder).save_to_preset(dir)",
        "recipe": None,
    },
    "gss_tokenizer_natural_crops": {
        "description": "A small dVAE of DALL-E's design (width 32, 4x down-sampling, 1024 "
                       "tokens) trained on natural-picture crops only, never on a maskige: "
                       "the CPU-scale stand-in for DALL-E.",
        "config": {"vocab_size": 1024, "hidden_dim": 32, "blocks_per_group": 2,
                   "group_count": 3, "init_dim": 128},
        "weights": "trained by its recipe (keras-gss train "
                   "zoo/recipes/gss_tokenizer_natural_crops.json --out DIR; DIR/tokenizer)",
        "recipe": "zoo/recipes/gss_tokenizer_natural_crops.json",
    },
}


def _record(name, backbone, dataset, description, config):
    return zoo_record(name, "gss", "GSSImageSegmenter", _PAPER, backbone, dataset, description,
                      _SCORE, config=config)


# The ADE20K configuration (spec §9): DALL-E's 8x tokenizer on a 2x maskige, d = 1/4, a
# two-block MLA; the paper's GSS rows use Swin-L or ResNet-101 (Tables 4 and 5), not MiT.
_B5 = {"architecture": "segformer", "variant": "b5"}
_DALL_E = {"tokenizer": "gss_tokenizer_dall_e", "mla_depth": 2}
presets = {
    "gss_ff_segformer_b5": _record(
        "gss_ff_segformer_b5", _B5, "ade20k",
        "GSS-FF (frozen DALL-E tokenizer, maximal-distance maskige, nearest-colour X^-1) on "
        "SegFormer MiT-B5, ADE20K setting.", {**_DALL_E, "maskige_decoder": "nearest"}),
    "gss_ftw_segformer_b5": _record(
        "gss_ftw_segformer_b5", _B5, "ade20k",
        "GSS-FT-W (GSS-FF plus a learned windowed-attention X^-1 trained on predicted "
        "maskiges) on SegFormer MiT-B5, ADE20K setting.", {**_DALL_E, "maskige_decoder": "swin"}),
}
_DIGITS = {"tokenizer": "gss_tokenizer_natural_crops", "mla_depth": 1, "mla_heads": 4,
           "window_size": 6, "token_hidden_dim": 128}
presets["gss_ff_segformer_digitscenes"] = _record(
    "gss_ff_segformer_digitscenes", DIGITSCENES_BACKBONE, "digitscenes",
    "GSS-FF with the small natural-picture tokenizer (4x, 1024 tokens) on the quick start's "
    "3-stage MiT (32/64/128), DigitScenes 96×96; trains on 2 CPU cores.",
    {**_DIGITS, "maskige_decoder": "nearest"})
presets["gss_ftw_segformer_digitscenes"] = _record(
    "gss_ftw_segformer_digitscenes", DIGITSCENES_BACKBONE, "digitscenes",
    "GSS-FT-W (GSS-FF plus a learned windowed-attention X^-1) with the small natural-picture "
    "tokenizer on the quick start's 3-stage MiT, DigitScenes 96×96; trains on 2 CPU cores.",
    {**_DIGITS, "maskige_decoder": "swin",
     "decoder_config": {"embedding_dim": 32, "num_heads": 2, "window_size": 6, "depth": 1}})
