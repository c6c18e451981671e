"""Evaluations, each a command writing JSON, markdown (and CSV, PNG, wavs where they help) beside the run:

- text_parity.py     stage 1: the model's answers to held-out speech against its LLM's answers to the text
- dialogue.py        stage 1: second turns of held-out dialogues, with and without the first turn
- speech_units.py    stage 2: unit error rate, blank share and length ratio of the decoder's units
- vocoder.py         the unit vocoder: resynthesis WER against the TTS ceiling, whole and streamed
- spoken_answers.py  does it speak: ASR-WER of the spoken answers, held-out and training, and a listening page
- latency.py         first-packet latency and ASR-WER against chunk size, ours against the reference's way
- asr.py             the ear and the scorer all of them use (Whisper, and WER after its normaliser)
"""
