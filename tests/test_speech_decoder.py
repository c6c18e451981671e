from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from omni.config import SpeechDecoderConfig
from omni.data import SpeechCollator
from omni.model import OmniModel, select_rows
from omni.prompt import IGNORE_INDEX
from omni.speech_decoder import SpeechDecoder, ctc_greedy, ctc_loss, ctc_min_frames, pad_units

SMALL = SpeechDecoderConfig(num_units=12, upsample=3, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)


def decoder(config: SpeechDecoderConfig = SMALL, llm_hidden: int = 16) -> SpeechDecoder:
    torch.manual_seed(0)
    return SpeechDecoder(config, llm_hidden).eval()


def test_upsample_repeats_each_state_lambda_times_or_stretches_to_the_units():
    x = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)
    lengths = torch.tensor([4, 2])
    d = decoder()
    frames = d.frame_lengths(lengths)
    assert frames.tolist() == [12, 6]
    up = d.upsample(x, lengths, frames)
    assert torch.equal(up[0, :, 0], x[0, :, 0].repeat_interleave(3))
    assert torch.equal(up[1, :6, 0], x[1, :2, 0].repeat_interleave(3))
    # 2 states but 9 units: "extend" stretches to 9 frames, each state used in order
    stretched = d.frame_lengths(lengths, torch.tensor([5, 9]))
    assert stretched.tolist() == [12, 9]
    row = d.upsample(x, lengths, stretched)[1, :9, 0].tolist()
    assert row == sorted(row) and set(row) == {4.0, 5.0}


OFFSETS = pytest.mark.parametrize("frame_offsets", [False, True], ids=["copies", "frame_offsets"])


def test_frame_offsets_number_each_states_frames_and_tell_copies_apart():
    d = decoder(replace(SMALL, frame_offsets=True))
    lengths = torch.tensor([4, 2])
    assert d.offsets(lengths, d.frame_lengths(lengths), 12).tolist()[0] == [0, 1, 2] * 4
    # 2 states stretched over 9 frames: 5 frames of the first (places 0 0 1 2 2), 4 of the second (0 1 1 2)
    assert d.offsets(lengths, torch.tensor([12, 9]), 12)[1, :9].tolist() == [0, 0, 1, 2, 2, 0, 1, 1, 2]
    hidden = torch.randn(1, 2, 16)
    plain, _ = decoder()(hidden, torch.tensor([2]))
    torch.testing.assert_close(plain[0, 0], plain[0, 1])  # the first token's copies see the same values
    numbered, _ = d(hidden, torch.tensor([2]))
    assert not torch.allclose(numbered[0, 0], numbered[0, 1])
    assert "frame_offsets.weight" in d.state_dict() and "frame_offsets.weight" not in decoder().state_dict()


@OFFSETS
def test_decoder_is_causal_over_tokens(frame_offsets):
    d = decoder(replace(SMALL, frame_offsets=frame_offsets))
    hidden = torch.randn(1, 5, 16)
    logits, frames = d(hidden, torch.tensor([5]))
    assert logits.shape == (1, 15, 13) and frames.tolist() == [15]
    changed = hidden.clone()
    changed[0, 3] += 1.0
    after, _ = d(changed, torch.tensor([5]))
    torch.testing.assert_close(after[0, :9], logits[0, :9])  # frames of tokens 0-2 do not see token 3
    assert not torch.allclose(after[0, 9:], logits[0, 9:])


@OFFSETS
def test_incremental_steps_equal_a_full_pass(frame_offsets):
    d = decoder(replace(SMALL, frame_offsets=frame_offsets))
    hidden = torch.randn(1, 7, 16)
    full, _ = d(hidden, torch.tensor([7]))
    cache, pieces = None, []
    for n in (1, 1, 3, 2):  # tokens arrive one or a few at a time
        start = sum(p.shape[1] for p in pieces) // 3
        logits, cache = d.step(hidden[:, start : start + n], cache)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)
    assert ctc_greedy(torch.cat(pieces, 1), torch.tensor([21]), 12) == ctc_greedy(full, torch.tensor([21]), 12)


@OFFSETS
def test_padding_does_not_change_a_row(frame_offsets):
    d = decoder(replace(SMALL, frame_offsets=frame_offsets))
    a, b = torch.randn(3, 16), torch.randn(5, 16)
    alone, _ = d(a[None], torch.tensor([3]))
    batch = torch.zeros(2, 5, 16)
    batch[0, :3], batch[1] = a, b
    padded, frames = d(batch, torch.tensor([3, 5]))
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
    logits, frames = extend(hidden, lengths, unit_lengths)
    assert frames.tolist() == [6, 10]
    raw = F.ctc_loss(logits[1:, :10].log_softmax(-1).transpose(0, 1), units[1:], frames[1:], unit_lengths[1:], 12)
    assert torch.isfinite(raw) and raw > 0  # a real alignment, not zeroed by zero_infinity
    # repeated neighbours need a blank between them: [3, 3, 3] needs 5 frames
    repeated, repeated_lengths = pad_units([[3, 3, 3]])
    assert ctc_min_frames(repeated, repeated_lengths).tolist() == [5]
    assert extend(hidden[:1, :1], torch.tensor([1]), ctc_min_frames(repeated, repeated_lengths))[1].tolist() == [5]
    skip_config = SpeechDecoderConfig(**{**SMALL.__dict__, "too_short": "skip"})
    skip = decoder(skip_config)
    logits, frames = skip(hidden, lengths, unit_lengths)
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


def test_save_load_round_trip_and_nan_rejected(tmp_path):
    d = decoder()
    d.save_pretrained(tmp_path / "dec")
    loaded = SpeechDecoder.from_pretrained(tmp_path / "dec").eval()
    hidden = torch.randn(1, 4, 16)
    torch.testing.assert_close(loaded(hidden, torch.tensor([4]))[0], d(hidden, torch.tensor([4]))[0])
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


def test_token_embeddings_join_each_answer_state(omni, toy_dir):
    from omni.data import SpeechInstructionDataset

    data = SpeechInstructionDataset(toy_dir / "train.jsonl")
    batch = SpeechCollator.for_model(omni)([data[0], data[1]])
    hidden, lengths = omni.response_hidden_states(batch)
    joined, counts = omni.response_hidden_states(batch, "at_token", token_embeddings=True)
    size = omni.hidden_size
    assert torch.equal(counts, lengths) and joined.shape[-1] == 2 * size
    torch.testing.assert_close(joined[..., :size], hidden)
    for row in range(2):
        tokens = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        torch.testing.assert_close(joined[row, : lengths[row], size:], omni.token_embeddings(tokens))
    table = omni.token_embeddings(torch.arange(omni.base_llm.get_input_embeddings().num_embeddings))
    assert table.norm(dim=-1).mean().item() == pytest.approx(1.0, abs=1e-4)
    decoder = SpeechDecoder(replace(SMALL, token_embeddings=True), size)
    assert decoder.input_proj.in_features == 2 * size
    logits, _ = decoder(joined, lengths)
    assert logits.shape[:2] == (2, int(lengths.max()) * SMALL.upsample)
