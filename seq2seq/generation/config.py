"""The generation config: what ``generate`` uses (generation_config.json), with transformers' names and defaults."""
from ..core.config import Config

# What generate() uses for a field no config and no argument sets: transformers 5's global defaults.
GENERATION_DEFAULTS = {
    "max_length": 20,  # as the default, it means 20 *new* tokens (see generate._resolve_lengths)
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "do_sample": False,
    "num_beams": 1,
    "num_return_sequences": 1,
    "early_stopping": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "encoder_repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "sequence_bias": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "exponential_decay_length_penalty": None,
    "renormalize_logits": False,
    "length_penalty": 1.0,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "decoder_start_token_id": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "max_time": None,
    "stop_strings": None,
    "use_cache": True,
    "output_scores": False,
    "output_attentions": False,
    "output_hidden_states": False,
    "return_dict_in_generate": False,
}


class GenerationConfig(Config):
    """What ``generate`` uses (generation_config.json), with transformers' names.

    As in transformers 5, a field nobody set is None, so "set" always means "not None" (a config that sets
    ``max_length: 20`` differs from one that leaves it alone); ``generate`` fills the unset fields from
    ``GENERATION_DEFAULTS``.
    """

    common = {}
    defaults = dict.fromkeys(GENERATION_DEFAULTS)
    SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")

    @classmethod
    def from_model_config(cls, config):
        """Special ids from an encoder-decoder config, falling back to its decoder's (as transformers does)."""
        fields = {}
        for name in cls.SPECIAL_IDS:
            value = getattr(config, name, None)
            if value is None:
                value = getattr(getattr(config, "decoder", None), name, None)
            if value is not None:
                fields[name] = value
        return cls(**fields)

    def to_diff_dict(self):
        """Only the fields that are set: what generation_config.json holds."""
        return {k: v for k, v in self.to_dict().items() if v is not None}
