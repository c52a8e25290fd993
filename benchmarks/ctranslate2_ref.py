"""CTranslate2 as a reference point for `generate.py --ctranslate2` (the optional `bench` extra).

CTranslate2 cannot load an `EncoderDecoderModel`, so the reference is a BART of bert2bert-base's shape (12 + 12
post-norm layers, 768 wide, 12 heads, feed-forward 3072, vocabulary 30522): random weights made by transformers,
saved, and converted in-process by CTranslate2's own converter. Both CTranslate2 and transformers run that BART on
the same source ids, so CTranslate2's ratio to transformers can be printed beside ours to transformers, measured in
the same run.

Two choices make the comparison a real check rather than a formality:
- The LM head is untied from the embeddings. With a tied random table, a BART's greedy output repeats its first
  token 64 times (the embedding of the last token dominates the residual stream, and its own row scores highest),
  so "ids identical" would say nothing. Untied, 62 of 64 greedy tokens are distinct. A decode step reads the same
  bytes either way (one embedding row, the whole output table).
- transformers is asked for exactly 64 tokens the way CTranslate2 is: eos stays the end token and is masked for
  the first 64 steps (`min_new_tokens` / `min_decoding_length`), and BART's forced bos/eos tokens are off.
"""
import dataclasses
import os
import tempfile
import warnings

import numpy as np

SHAPE = dict(d_model=768, layers=12, heads=12, ffn=3072, vocab=30522)
BOS, PAD, EOS, UNK = 0, 1, 2, 3  # BART's special ids; the decoder starts from EOS, as BART's does


def vocabulary(size):
    """Token strings for ids 0..size-1: BART's four specials, then ``w4``, ``w5``... (CTranslate2 speaks strings)."""
    return ["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, size)]


def translate_options(extra, *, new):
    """``generate()`` keyword arguments of a workload -> CTranslate2 ``translate_batch`` keyword arguments."""
    known = {"num_beams", "do_sample", "top_k", "top_p"}
    if set(extra) - known:
        raise ValueError(f"no CTranslate2 equivalent for {sorted(set(extra) - known)}")
    options = dict(beam_size=extra.get("num_beams", 1), max_decoding_length=new, min_decoding_length=new)
    if extra.get("do_sample"):
        options.update(sampling_topk=extra.get("top_k", 50), sampling_topp=extra.get("top_p", 1.0))
    return options


def source_tokens(ids, mask, tokens):
    """Right-padded [B, S] ids and mask -> one token list per row, without its padding (CTranslate2's batches)."""
    return [[tokens[i] for i in row[:int(m.sum())]] for row, m in zip(ids, mask)]


@dataclasses.dataclass
class BartReference:
    """The converted BART in CTranslate2 (``translator``) and the same weights in transformers (``hf``)."""
    hf: object
    translator: object
    tokens: list  # id -> token string
    index: dict  # token string -> id
    threads: int

    def run_ct2(self, ids, mask, extra, *, new):
        """CTranslate2's ids [B, new] (it returns no decoder-start token)."""
        results = self.translator.translate_batch(source_tokens(ids, mask, self.tokens),
                                                  **translate_options(extra, new=new))
        return np.array([[self.index[t] for t in r.hypotheses[0]] for r in results])

    def run_hf(self, ids, mask, extra, *, new):
        """transformers' ids [B, new] (the decoder-start column dropped, to compare with CTranslate2's)."""
        import torch  # noqa: PLC0415
        import transformers  # noqa: PLC0415

        config = transformers.GenerationConfig(decoder_start_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD,
                                               max_new_tokens=new, min_new_tokens=new, **extra)
        with torch.no_grad():
            out = self.hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                                   generation_config=config)
        return out[:, 1:].numpy()


def bart_reference(*, threads, seed=0, shape=SHAPE):
    """Build the random BART in transformers, save it with a word-level tokenizer, convert it, load it in CTranslate2.

    The tokenizer only exists because the converter reads the vocabulary and the special tokens through
    ``AutoTokenizer``; ids are handed over as the strings of `vocabulary()`.
    """
    import ctranslate2  # noqa: PLC0415
    import tokenizers  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    from ctranslate2.converters import TransformersConverter  # noqa: PLC0415

    torch.manual_seed(seed)
    config = transformers.BartConfig(
        vocab_size=shape["vocab"], d_model=shape["d_model"], encoder_layers=shape["layers"],
        decoder_layers=shape["layers"], encoder_attention_heads=shape["heads"], decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"], decoder_ffn_dim=shape["ffn"], max_position_embeddings=512,
        bos_token_id=BOS, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=EOS,
        forced_bos_token_id=None, forced_eos_token_id=None, tie_word_embeddings=False,
        # transformers 5 dropped these two attributes (BART is always post-norm with an embedding LayerNorm), and
        # CTranslate2's BART loader still reads them
        normalize_before=False, normalize_embedding=True)
    tokens = vocabulary(shape["vocab"])
    index = {t: i for i, t in enumerate(tokens)}
    word_level = tokenizers.Tokenizer(tokenizers.models.WordLevel(index, unk_token="<unk>"))
    word_level.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="<s>", eos_token="</s>",
                                                     unk_token="<unk>", pad_token="<pad>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.BartForConditionalGeneration(config).eval()
        with tempfile.TemporaryDirectory() as path:
            saved, converted = os.path.join(path, "hf"), os.path.join(path, "ct2")
            hf.save_pretrained(saved)
            tokenizer.save_pretrained(saved)
            TransformersConverter(saved).convert(converted)
            # float32 weights and arithmetic, as ours and transformers'; the model is read into memory here
            translator = ctranslate2.Translator(converted, device="cpu", compute_type="float32", inter_threads=1,
                                                intra_threads=threads)
    ctranslate2.set_random_seed(seed)
    return BartReference(hf=hf, translator=translator, tokens=tokens, index=index, threads=threads)
