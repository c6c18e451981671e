from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from omni.config import DecoderInputConfig, SpeechDecoderConfig
from omni.data import SpeechCollator
from omni.decoder_input import TextEmbeddings
from omni.model import OmniModel, select_rows
from omni.prompt import IGNORE_INDEX
from omni.speech_decoder import SpeechDecoder, ctc_greedy, ctc_loss, ctc_min_frames, pad_units

SMALL = SpeechDecoderConfig(num_units=12, upsample=3, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


TABLE = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))  # a 40-token "LLM" of width 16
INPUTS = {  # what the decoder reads: states alone (plain copies, frame offsets), states and tokens, tokens alone
    "states": (DecoderInputConfig(), True),
    "states+offsets": (DecoderInputConfig(frame_offsets=True), True),
    "add": (DecoderInputConfig("add"), True),
    "gate+offsets": (DecoderInputConfig("gate", frame_offsets=True), True),
    "text alone": (DecoderInputConfig("gate", frame_offsets=True), False),
}
EACH_INPUT = pytest.mark.parametrize("reads", INPUTS, ids=list(INPUTS))


def decoder(config: SpeechDecoderConfig = SMALL, llm_hidden: int = 16) -> SpeechDecoder:
    torch.manual_seed(0)
    text = TextEmbeddings(TABLE) if config.input.fusion != "none" else None
    return SpeechDecoder(config, llm_hidden, text).eval()


def reading(reads: str, tokens: int, batch: int = 1) -> tuple[SpeechDecoder, torch.Tensor | None, torch.Tensor]:
    """A decoder reading as `reads` says, and inputs for it: states (or None) and token ids."""
    config, with_states = INPUTS[reads]
    generator = torch.Generator().manual_seed(2)
    states = torch.randn(batch, tokens, 16, generator=generator) if with_states else None
    return decoder(replace(SMALL, input=config)), states, torch.randint(0, 40, (batch, tokens), generator=generator)


@EACH_INPUT
def test_decoder_is_causal_over_tokens(reads):
    d, states, tokens = reading(reads, 5)
    logits, frames = d(states, torch.tensor([5]), tokens)
    assert logits.shape == (1, 15, 13) and frames.tolist() == [15]
    changed_states = None if states is None else states.clone()
    changed_tokens = tokens.clone()
    if states is not None:
        changed_states[0, 3] += 1.0
    else:
        changed_tokens[0, 3] = (tokens[0, 3] + 1) % 40
    after, _ = d(changed_states, torch.tensor([5]), changed_tokens)
    torch.testing.assert_close(after[0, :9], logits[0, :9])  # frames of tokens 0-2 do not see token 3
    assert not torch.allclose(after[0, 9:], logits[0, 9:])


@EACH_INPUT
def test_incremental_steps_equal_a_full_pass(reads):
    d, states, tokens = reading(reads, 7)
    full, _ = d(states, torch.tensor([7]), tokens)
    cache, pieces, start = None, [], 0
    for n in (1, 1, 3, 2):  # tokens arrive one or a few at a time
        part = None if states is None else states[:, start : start + n]
        logits, cache = d.step(part, cache, tokens[:, start : start + n])
        pieces.append(logits)
        start += n
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert ctc_greedy(torch.cat(pieces, 1), torch.tensor([21]), 12) == ctc_greedy(full, torch.tensor([21]), 12)


@EACH_INPUT
def test_padding_does_not_change_a_row(reads):
    d, states, tokens = reading(reads, 5, batch=2)
    alone, _ = d(None if states is None else states[:1, :3], torch.tensor([3]), tokens[:1, :3])
    padded_states = None if states is None else states.clone()
    padded_tokens = tokens.clone()
    padded_tokens[0, 3:] = 0
    if padded_states is not None:
        padded_states[0, 3:] = 0
    padded, frames = d(padded_states, torch.tensor([3, 5]), padded_tokens)
    assert frames.tolist() == [9, 15]
    torch.testing.assert_close(padded[0, :9], alone[0], atol=1e-5, rtol=1e-5)


def test_ctc_loss_matches_the_reference_definition():
    torch.manual_seed(0)
    logits = torch.randn(2, 10, 5)
    frames = torch.tensor([10, 7])
    units, unit_lengths = pad_units([[0, 1, 2], [3, 1]])
    expected = (
        sum(
            F.ctc_loss(
                logits[i, : frames[i]].log_softmax(-1)[:, None],
                units[i : i + 1, : unit_lengths[i]],
                frames[i : i + 1],
                unit_lengths[i : i + 1],
                blank=4,
                reduction="sum",
            )
            for i in range(2)
        )
        / 5
    )
    torch.testing.assert_close(ctc_loss(logits, frames, units, unit_lengths, blank=4), expected)


def test_rows_too_short_are_extended_or_skipped():
    hidden = torch.randn(2, 2, 16)
    lengths = torch.tensor([2, 2])
    units, unit_lengths = pad_units([[1, 2, 3], list(range(10))])  # row 1: 10 units > lambda * 2 = 6 frames
    extend = decoder()
    logits, frames = extend(hidden, lengths, min_frames=unit_lengths)
    assert frames.tolist() == [6, 10]
    raw = F.ctc_loss(logits[1:, :10].log_softmax(-1).transpose(0, 1), units[1:], frames[1:], unit_lengths[1:], 12)
    assert torch.isfinite(raw) and raw > 0  # a real alignment, not zeroed by zero_infinity
    # repeated neighbours need a blank between them: [3, 3, 3] needs 5 frames
    repeated, repeated_lengths = pad_units([[3, 3, 3]])
    assert ctc_min_frames(repeated, repeated_lengths).tolist() == [5]
    assert extend(hidden[:1, :1], torch.tensor([1]), min_frames=ctc_min_frames(repeated, repeated_lengths))[
        1
    ].tolist() == [5]
    skip_config = SpeechDecoderConfig(**{**SMALL.__dict__, "too_short": "skip"})
    skip = decoder(skip_config)
    logits, frames = skip(hidden, lengths, min_frames=unit_lengths)
    only_first = ctc_loss(logits[:1], frames[:1], units[:1, :3], unit_lengths[:1], blank=12)
    torch.testing.assert_close(skip.loss(hidden, lengths, units, unit_lengths), only_first)


def test_greedy_ctc_merges_repeats_and_drops_blanks():
    blank = 3
    path = [0, 0, blank, 0, 1, 1, blank, blank, 2, 2]
    logits = F.one_hot(torch.tensor([path, path]), 4).float()
    assert ctc_greedy(logits, torch.tensor([10, 5]), blank) == [[0, 0, 1, 2], [0, 0, 1]]


def test_reference_size_is_425m_parameters():
    with torch.device("meta"):
        d = SpeechDecoder(SpeechDecoderConfig(), llm_hidden_size=4096)
    assert 425e6 < sum(p.numel() for p in d.parameters()) < 426e6
    assert isinstance(d.layers.norm, torch.nn.Identity)  # no final norm, as the reference


@EACH_INPUT
def test_save_load_round_trip(reads, tmp_path):
    d, states, tokens = reading(reads, 4)
    d.save_pretrained(tmp_path / "dec")
    text = TextEmbeddings(TABLE) if d.input.reads_text else None
    loaded = SpeechDecoder.from_pretrained(tmp_path / "dec", text).eval()
    torch.testing.assert_close(loaded(states, torch.tensor([4]), tokens)[0], d(states, torch.tensor([4]), tokens)[0])
    assert "input.text.table" not in loaded.state_dict()  # the LLM's table is not the decoder's to save
    if d.input.reads_text:  # a decoder that reads token embeddings needs the table it was trained with
        with pytest.raises(ValueError, match="names no LLM to read them from"):
            SpeechDecoder.from_pretrained(tmp_path / "dec")


def test_nan_weights_are_refused(tmp_path):
    d = decoder()
    state = d.state_dict()
    state["output_proj.bias"][0] = float("nan")
    d.save_pretrained(tmp_path / "nan", state_dict=state)
    with pytest.raises(ValueError, match="NaN or infinite values in \\['output_proj.bias'\\]"):
        SpeechDecoder.from_pretrained(tmp_path / "nan")


@pytest.fixture
def omni(model_config) -> OmniModel:
    torch.manual_seed(0)
    return OmniModel.from_config(model_config).eval()


def test_response_states_are_the_final_normed_states_at_answer_positions(omni, toy_dir):
    from omni.data import SpeechInstructionDataset

    data = SpeechInstructionDataset(toy_dir / "train.jsonl")
    batch = SpeechCollator.for_model(omni)([data[0], data[1]])
    hidden, lengths = omni.response_hidden_states(batch)
    with torch.no_grad():
        full = omni(batch, output_hidden_states=True).hidden_states[-1]
    keep = batch["labels"] != IGNORE_INDEX
    assert lengths.tolist() == keep.sum(1).tolist()
    for row in range(2):
        torch.testing.assert_close(hidden[row, : lengths[row]], full[row][keep[row]])
    # the end-of-turn token is among them
    last = keep[0].nonzero().max()
    assert batch["input_ids"][0, last].item() in omni.prompt.end_of_turn_ids
    # "predicting": the states that chose them, one position earlier (the first is the prompt's last)
    chose, counts = omni.response_hidden_states(batch, "predicting")
    assert torch.equal(counts, lengths)
    for row in range(2):
        torch.testing.assert_close(chose[row, : lengths[row]], full[row][keep[row].nonzero()[:, 0] - 1])


def test_loss_reads_the_answer_not_the_question(omni, toy_dir):
    """The known re-implementation bug computes CTC on the question's states: this would catch it."""
    from omni.data import SpeechInstructionDataset

    data = SpeechInstructionDataset(toy_dir / "train.jsonl", num_units=32)
    examples = [data[0], data[1]]
    batch = SpeechCollator.for_model(omni)(examples)
    with torch.no_grad():
        states = omni.base_llm.get_decoder()(inputs_embeds=omni.inputs_embeds(batch)).last_hidden_state
    answer = batch["labels"] != IGNORE_INDEX
    units, unit_lengths = pad_units([ex.units for ex in examples])
    d = decoder(SpeechDecoderConfig(**{**SMALL.__dict__, "num_units": 32}), omni.hidden_size)

    def loss(all_states):
        return d.loss(*select_rows(all_states, answer), units, unit_lengths)

    base = loss(states)
    question_moved = states + 5.0 * (~answer)[..., None] * torch.randn_like(states)
    answer_moved = states + 5.0 * answer[..., None] * torch.randn_like(states)
    torch.testing.assert_close(loss(question_moved), base)
    assert abs(loss(answer_moved) - base) > 1e-3
