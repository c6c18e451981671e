"""The speech LLM: frozen Whisper encoder -> adaptor -> chat LLM, with save and load.

    audio -> mel windows -> SpeechEncoder -> SpeechAdaptor -> embeddings spliced into the prompt -> LLM

A saved model is a directory anyone can load: `omni_config.yaml`, `adaptor.safetensors`, the
tokenizer, and either `llm/` (full weights, safetensors) or `lora/` (a peft adapter over the base
LLM named in the config). The encoder is frozen, so it is referenced by name or path, not copied.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from omni.adaptor import SpeechAdaptor
from omni.config import ModelConfig, from_dict, to_dict
from omni.encoder import SpeechEncoder
from omni.prompt import IGNORE_INDEX, SPEECH_TOKEN_ID, PromptBuilder

CONFIG_FILE = "omni_config.yaml"
ADAPTOR_FILE = "adaptor.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def end_of_turn_ids(llm: PreTrainedModel) -> list[int]:
    eos = getattr(llm.generation_config, "eos_token_id", None)
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


class OmniModel(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        encoder: SpeechEncoder,
        adaptor: SpeechAdaptor,
        llm: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
    ):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.adaptor = adaptor
        self.llm = llm
        self.tokenizer = tokenizer
        self.prompt = PromptBuilder(tokenizer, config.prompt, end_of_turn_ids(self.base_llm))

    # ---- building -------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls, config: ModelConfig, llm_path: str | Path | None = None, tokenizer_path: str | Path | None = None
    ) -> OmniModel:
        """A fresh model: pretrained encoder and LLM, a new adaptor, LoRA added if configured."""
        encoder = SpeechEncoder.from_config(config.encoder)
        llm = AutoModelForCausalLM.from_pretrained(
            str(llm_path or config.llm.name_or_path),
            dtype=DTYPES[config.llm.dtype],
            attn_implementation=config.llm.attn_implementation,
        )
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or config.llm.name_or_path))
        a = config.adaptor
        adaptor = SpeechAdaptor(encoder.width, llm.config.hidden_size, a.stride, a.hidden_size).to(
            DTYPES[config.llm.dtype]
        )
        model = cls(config, encoder, adaptor, llm, tokenizer)
        if config.llm.train == "lora":
            model.llm = cls._add_lora(llm, config)
        model.set_trainable()
        return model

    @staticmethod
    def _add_lora(llm: PreTrainedModel, config: ModelConfig) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        lora = config.llm.lora
        peft_config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
        )
        return get_peft_model(llm, peft_config)

    def set_trainable(self) -> None:
        """Encoder never trains; adaptor always; the LLM as configured (LoRA: only its adapters)."""
        self.encoder.requires_grad_(False)
        self.adaptor.requires_grad_(True)
        mode = self.config.llm.train
        if mode == "full":
            self.llm.requires_grad_(True)
        elif mode == "frozen":
            self.llm.requires_grad_(False)
        # LoRA: peft has already frozen the base and left the adapters trainable.

    @property
    def base_llm(self) -> PreTrainedModel:
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    @property
    def hidden_size(self) -> int:
        return self.base_llm.config.hidden_size

    # ---- forward --------------------------------------------------------------------------
    def embed_speech(
        self, mels: torch.Tensor, mel_frames: torch.Tensor, windows_per_clip: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not len(windows_per_clip):  # a batch of text questions: no speech at all
            empty = torch.zeros(0, 0, self.hidden_size, device=mels.device)
            return empty, torch.zeros(0, dtype=torch.long, device=mels.device)
        clips, _ = self.encoder.encode_clips(mels, mel_frames, windows_per_clip.tolist())
        return self.adaptor(clips)

    def splice(
        self,
        input_ids: torch.Tensor,
        speech: torch.Tensor,
        speech_lengths: torch.Tensor,
        clips_per_row: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with each row's speech slots filled by its speech embeddings, in order: the
        clips (one per row unless `clips_per_row` says more, as for a conversation's earlier questions)
        fill the slots row by row."""
        slots = input_ids == SPEECH_TOKEN_ID
        per_row = slots.sum(dim=1)
        expected = speech_lengths.to(per_row.device)
        if clips_per_row is not None:
            rows = torch.repeat_interleave(torch.arange(len(clips_per_row)), clips_per_row.cpu()).to(per_row.device)
            expected = torch.zeros_like(per_row).index_add_(0, rows, expected.to(per_row.dtype))
        if not torch.equal(per_row, expected):
            raise ValueError(f"speech slots per row {per_row.tolist()} != speech embeddings {expected.tolist()}")
        embeds = self.base_llm.get_input_embeddings()(input_ids.masked_fill(slots, 0))
        valid = torch.arange(speech.shape[1], device=speech.device) < speech_lengths[:, None]
        return embeds.masked_scatter(slots[..., None], speech[valid].to(embeds.dtype))

    def inputs_embeds(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        speech, lengths = self.embed_speech(batch["mels"], batch["mel_frames"], batch["windows_per_clip"])
        return self.splice(batch["input_ids"], speech, lengths, batch.get("clips_per_row"))

    def forward(self, batch: dict[str, torch.Tensor], output_hidden_states: bool = False):
        return self.llm(
            inputs_embeds=self.inputs_embeds(batch),
            attention_mask=batch["attention_mask"],
            labels=batch.get("labels"),
            output_hidden_states=output_hidden_states,
        )

    @torch.no_grad()
    def response_hidden_states(
        self, batch: dict[str, torch.Tensor], alignment: str = "at_token"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer states after the final norm, one per answer token (labels != -100): (B, M, H) right-padded,
        and M per row. `alignment` (the speech decoder's, omni/decoder_input.py): "at_token" takes the states at
        the answer's positions, "predicting" those one position earlier, which predicted them.
        Runs the decoder stack without the LM head, so no vocabulary-sized logits are made."""
        hidden = self.base_llm.get_decoder()(
            inputs_embeds=self.inputs_embeds(batch), attention_mask=batch["attention_mask"], use_cache=False
        ).last_hidden_state
        answer = batch["labels"] != IGNORE_INDEX
        states = answer
        if alignment == "predicting":  # the answer always follows a prompt, so position p - 1 exists
            states = torch.cat([answer[:, 1:], answer.new_zeros(answer.shape[0], 1)], dim=1)
        elif alignment != "at_token":
            raise ValueError(f"alignment must be at_token or predicting, got {alignment!r}")
        return select_rows(hidden, states)

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], **kwargs) -> list[str]:
        """Answers to a left-padded batch (collator with padding_side='left', with_response=False)."""
        kwargs.setdefault("max_new_tokens", 128)
        kwargs.setdefault("do_sample", False)
        kwargs.setdefault("eos_token_id", sorted(self.prompt.end_of_turn_ids))
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        out = self.llm.generate(
            inputs_embeds=self.inputs_embeds(batch), attention_mask=batch["attention_mask"], **kwargs
        )
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    # ---- save / load ----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Write the hand-off directory; `state_dict` is this module's full one where it is sharded (ZeRO-3)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = state_dict if state_dict is not None else self.state_dict()
        (directory / CONFIG_FILE).write_text(yaml.safe_dump(to_dict(self.config), sort_keys=False))
        adaptor = {k[len("adaptor.") :]: v.contiguous() for k, v in state.items() if k.startswith("adaptor.")}
        save_file(adaptor, directory / ADAPTOR_FILE)
        llm_state = {k[len("llm.") :]: v for k, v in state.items() if k.startswith("llm.")}
        if self.config.llm.train == "lora":
            self.llm.save_pretrained(directory / "lora", state_dict=llm_state)
        elif self.config.llm.train == "full":
            self.llm.save_pretrained(directory / "llm", state_dict=llm_state, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> OmniModel:
        directory = Path(directory)
        config = load_model_config(directory)
        full = config.llm.train == "full"
        model = cls.from_config(
            _without_lora(config), llm_path=directory / "llm" if full else None, tokenizer_path=directory
        )
        model.adaptor.load_state_dict(load_file(directory / ADAPTOR_FILE))
        if config.llm.train == "lora":
            from peft import PeftModel

            model.llm = PeftModel.from_pretrained(model.llm, directory / "lora", is_trainable=True)
        model.config = config
        model.set_trainable()
        return model


def select_rows(values: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept positions of each row, packed to the left: (B, L, H), (B, L) -> (B, max kept, H), counts."""
    lengths = keep.sum(dim=1)
    out = values.new_zeros(values.shape[0], int(lengths.max()), values.shape[-1])
    slots = torch.arange(out.shape[1], device=values.device) < lengths[:, None]
    out[slots] = values[keep]
    return out, lengths


def load_model_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not an omni model directory (no {CONFIG_FILE})")
    return from_dict(ModelConfig, yaml.safe_load(path.read_text()), str(path))


def _without_lora(config: ModelConfig) -> ModelConfig:
    """Same config with the LLM loaded plain: LoRA weights come from the saved adapter instead."""
    from dataclasses import replace

    return replace(config, llm=replace(config.llm, train="frozen" if config.llm.train == "lora" else config.llm.train))
