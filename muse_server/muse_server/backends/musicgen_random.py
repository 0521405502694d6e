"""Random-weight MusicGen models and a locally built tokenizer, for tests and benchmarks on
machines that cannot download weights or tokenizer files.

- :func:`musicgen_small_config`: the architecture of ``facebook/musicgen-small`` (T5-base text
  encoder, EnCodec 32 kHz codec, 24-layer 1024-wide decoder over 4 codebooks of 2048), as the
  transformers conversion scripts build it. Speed does not depend on the weight values, so a
  random model of this shape benchmarks like the real one.
- :func:`tiny_musicgen_config`: the same layout a few dozen channels wide, for unit tests.
- :func:`build_t5_tokenizer`: a real ``T5Tokenizer`` (the Unigram tokenizer class
  musicgen-small uses) over a vocabulary made here: the letters, digits and punctuation pieces
  spell any ASCII prompt, a few music words are whole pieces; other characters map to ``<unk>``.
"""

from __future__ import annotations

import string

import torch

START_TOKEN = 2048      # musicgen-small's decoder start = pad = bos token (one past the codebook)
_WORDS = ('calm ambient techno chill lofi hip hop jazz cinematic upbeat pop with soft pads '
          'slow fast tempo beat beats bpm drums bass piano synth music for walking cycling '
          'sitting working driving stairs').split()


def build_t5_tokenizer():
    from transformers import T5Tokenizer
    pieces = [('<pad>', 0.0), ('</s>', 0.0), ('<unk>', 0.0), ('\u2581', -2.0)]
    for char in string.ascii_letters + string.digits + ",.-'!/&()":
        pieces += [(char, -5.0), ('\u2581' + char, -5.5)]
    pieces += [('\u2581' + word, -1.0) for word in _WORDS]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def build_processor(tokenizer):
    """A ``MusicgenProcessor`` around ``tokenizer`` with musicgen-small's feature extractor
    settings (what ``AutoProcessor`` loads for the real model)."""
    from transformers import EncodecFeatureExtractor, MusicgenProcessor
    feature_extractor = EncodecFeatureExtractor(feature_size=1, sampling_rate=32000,
                                                padding_side='left')
    return MusicgenProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)


def _encodec_32khz(**narrower):
    from transformers import EncodecConfig
    # facebook/encodec_32khz: EncodecConfig defaults with these changes (conversion script).
    options = dict(upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_filters=64,
                   sampling_rate=32000, codebook_size=2048, use_causal_conv=False,
                   normalize=False, use_conv_shortcut=False)
    return EncodecConfig(**{**options, **narrower})


def musicgen_small_config():
    from transformers import MusicgenConfig, MusicgenDecoderConfig, T5Config
    text_encoder = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12,
                            num_heads=12)                                   # t5-base
    decoder = MusicgenDecoderConfig(hidden_size=1024, ffn_dim=4096, num_hidden_layers=24,
                                    num_attention_heads=16, num_codebooks=4, vocab_size=2048,
                                    max_position_embeddings=2048, pad_token_id=START_TOKEN,
                                    bos_token_id=START_TOKEN)
    return MusicgenConfig(text_encoder=text_encoder, audio_encoder=_encodec_32khz(), decoder=decoder)


def tiny_musicgen_config(text_vocab_size: int):
    """musicgen-small's layout (same codec rates, codebooks and token ids), tiny widths."""
    from transformers import MusicgenConfig, MusicgenDecoderConfig, T5Config
    text_encoder = T5Config(vocab_size=text_vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                            num_heads=4)
    decoder = MusicgenDecoderConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_codebooks=4, vocab_size=2048,
                                    max_position_embeddings=2048, pad_token_id=START_TOKEN,
                                    bos_token_id=START_TOKEN)
    return MusicgenConfig(text_encoder=text_encoder,
                          audio_encoder=_encodec_32khz(hidden_size=16, num_filters=4),
                          decoder=decoder)


def random_musicgen(config, seed: int = 0):
    """A ``MusicgenForConditionalGeneration`` with random weights and musicgen-small's
    generation config, in eval mode.

    EnCodec's initialisation leaves the codebook embeddings at zero (pretrained weights fill
    them), which would make every code decode to the same sound; they get random values here.
    """
    from transformers import MusicgenForConditionalGeneration
    torch.manual_seed(seed)
    model = MusicgenForConditionalGeneration(config).eval()
    generation = model.generation_config
    generation.decoder_start_token_id = START_TOKEN
    generation.pad_token_id = START_TOKEN
    generation.bos_token_id = START_TOKEN
    generation.do_sample = True
    generation.guidance_scale = 3.0
    generation.max_length = int(30 * model.audio_encoder.config.frame_rate)
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_()
    return model
