"""`omni generate`: answer a spoken question, printing the text as it is written and writing the speech.

    omni generate question.wav --tiny -o answer.wav                  # tiny random models: gibberish, no training
    omni generate question.wav --chunk-size 40 -o answer.wav         # the demo's models (make demo trains them)
    omni generate question.wav --model M --decoder D --vocoder V --chunk-size 10 --sample-rate 16000 -o answer.wav
    omni generate follow_up.wav --conversation chat.json -o answer2.wav   # in the context of chat.json

The question and the model folders are checked before anything heavy is imported, so a bad file is refused at
once, with the server's limits and messages (`omni.audio.load_question`). The streaming itself is
omni/speech_generator.py's.
"""

from __future__ import annotations

from pathlib import Path

from omni.audio import MAX_QUESTION_SECONDS, load_question
from omni.cli import FIRST_CHUNK_HELP, command_parser
from omni.config import DEMO_PARTS

NO_MODEL = "make demo trains the demo's models; --tiny answers with tiny random ones"


def check_parts(model: Path | None, decoder: Path | None, vocoder: Path | None) -> None:
    """Every named (or default) model folder exists: said before the models' imports and loading."""
    for flag, path in (("--model", model), ("--decoder", decoder), ("--vocoder", vocoder)):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{flag} {path}: no such model directory ({NO_MODEL})")
    if model is None and not DEMO_PARTS[0].is_dir():
        raise FileNotFoundError(f"no trained model at {DEMO_PARTS[0]} ({NO_MODEL}; --model names another)")


def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("audio", type=Path, help="the spoken question (any format soundfile reads)")
    parser.add_argument(
        "--model",
        type=Path,
        help=f"stage-1 model, converted LLaMA-Omni directory or LLaMA-Omni's checkpoint (default {DEMO_PARTS[0]})",
    )
    parser.add_argument("--decoder", type=Path, help=f"speech decoder (default: the model's, else {DEMO_PARTS[1]})")
    parser.add_argument("--vocoder", type=Path, help=f"unit vocoder (default: the model's, else {DEMO_PARTS[2]})")
    tiny = "answer with tiny random models written to this folder (default .cache/tiny_serve): no training needed"
    parser.add_argument("--tiny", type=Path, nargs="?", const=Path(".cache/tiny_serve"), default=None, help=tiny)
    parser.add_argument("--chunk-size", type=int, default=40, help="Omega: minimum units per vocoder call; 0 = offline")
    parser.add_argument("--first-chunk", type=int, default=0, help=FIRST_CHUNK_HELP)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-seconds", type=float, default=MAX_QUESTION_SECONDS, help="longest question accepted")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--join", choices=["crossfade", "bare"], default="crossfade")
    parser.add_argument("--sample-rate", type=int, default=16000, help="rate of the written answer")
    parser.add_argument("-o", "--output", type=Path, default=Path("answer.wav"))
    parser.add_argument(
        "--conversation", type=Path, help="a saved conversation to answer in (created if missing, the turn added)"
    )
    parser.add_argument("--text", help="the question's words (needed when the model reads earlier questions as text)")
    parser.add_argument("--device", default="auto", help="cuda, cpu, ...; auto = cuda when there is one")
    args = parser.parse_args(argv)
    question = load_question(args.audio, args.max_seconds)
    if args.tiny is None:
        check_parts(args.model, args.decoder, args.vocoder)

    import soundfile
    import torch

    from omni.conversation import Conversation
    from omni.speech_generator import SpeechGenerator, load_parts
    from omni.vocoder.base import resample

    if args.tiny is not None:
        from omni.tiny import write_tiny_models

        args.model, args.decoder, args.vocoder = write_tiny_models(args.tiny).values()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    conversation = None
    if args.conversation:
        conversation = Conversation.load(args.conversation) if args.conversation.exists() else Conversation()
    parts = load_parts(args.model, args.decoder, args.vocoder, device)
    generator = SpeechGenerator(*parts, join=args.join, first_chunk=args.first_chunk or None)
    sampling = {"do_sample": args.sample, "temperature": args.temperature, "top_p": args.top_p}
    if conversation is not None:
        chunk = args.chunk_size or None
        events = conversation.ask(generator, question, args.text, chunk, args.max_new_tokens, **sampling)
    else:
        events = generator(question, args.chunk_size or None, args.max_new_tokens, **sampling)
    first_audio = None
    for event in events:
        if event.kind == "text":
            print(event.text, end="", flush=True)
        elif event.kind == "audio" and first_audio is None:
            first_audio = event.time
        elif event.kind == "done":
            soundfile.write(args.output, resample(event.audio, event.sample_rate, args.sample_rate), args.sample_rate)
            seconds = len(event.audio) / event.sample_rate
            first = first_audio or event.time
            print(f"\n{len(event.units)} units, {seconds:.1f} s of speech in {event.time:.2f} s", end="")
            print(f"; first audio after {first:.2f} s; written to {args.output}")
    if conversation is not None:
        turns = len(conversation.turns) // 2
        print(f"conversation of {turns} exchanges saved to {conversation.save(args.conversation)}")


if __name__ == "__main__":
    from omni.cli import run_command

    run_command(main)
