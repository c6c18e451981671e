// The page of `omni serve`: microphone -> WebSocket (/v1/stream, see omni/serve/protocol.py) -> text and audio.
// The audio context runs at 16 kHz, so the microphone arrives already as the 16 kHz float32 the server takes
// and the answer is asked for at that rate too. window.omni holds every answer's figures (the browser test reads it).
// Barge-in: speaking over an answer (hands-free), or pressing to talk, stops its playback at once and sends
// {"type": "interrupt", "played": samples played}; the server keeps what was heard for the next question.
"use strict";

const RATE = 16000;
const FRAME = 1600; // samples per message: 100 ms
const SPEECH_RMS = 0.02; // hands-free: louder is speech...
const QUIET_RMS = 0.01; // ...and quieter than this for QUIET_MS after speech ends the question
const QUIET_MS = 800;
const BARGE_MS = 250; // hands-free: this much speech over an answer interrupts it...
const PREROLL = 8000; // ...and the last 0.5 s of microphone, its start, opens the new question
const WAVE_PEAKS = 625; // the waveform's width shows 5 s; longer questions are squeezed
const $ = (id) => document.getElementById(id);
const state = { answers: [], scheduled: 0 };
window.omni = state;

let ctx = null; // AudioContext: capture and playback
let ws = null;
let listening = false;
let pressed = false; // the button or space bar is held (hold mode)
let current = null; // the answer being asked or written
let cut = null; // an interrupted answer whose "interrupted" event has not come yet: its events are dropped
const archived = new WeakMap(); // answer -> its line under "Earlier answers"
let sources = []; // the current answer's scheduled chunks: { source, at, samples, rate }
let preroll = []; // hands-free, between questions: the latest microphone samples
let speechMs = 0; // hands-free, while an answer plays: how long the speech over it has lasted
let announced = null; // the audio event whose samples are the next binary message
let playhead = 0; // when the scheduled audio ends, in ctx time
let frame = [];
let framed = 0;
let peaks = []; // the question's waveform: one peak per 128 samples (8 ms)
let heard = false; // hands-free: speech was heard in this question
let quietSince = 0;

async function setupAudio() {
  if (ctx) return;
  ctx = new AudioContext({ sampleRate: RATE });
  await ctx.audioWorklet.addModule("/static/capture.js");
  const media = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
  });
  const capture = new AudioWorkletNode(ctx, "capture");
  capture.port.onmessage = (e) => onSamples(e.data);
  ctx.createMediaStreamSource(media).connect(capture);
  capture.connect(ctx.destination); // keeps it pulled by the graph; it outputs silence
}

function connect() {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    ws = new WebSocket(`${scheme}://${location.host}/v1/stream`);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error("cannot reach the server"));
    ws.onmessage = onMessage;
    ws.onclose = () => {
      if (listening) stopTalking(false);
      if (current && !current.done && !current.error) fail("the connection closed");
    };
  });
}

async function startTalking() {
  if (listening) return;
  try {
    await setupAudio();
    await ctx.resume();
    if (!ws || ws.readyState !== WebSocket.OPEN) await connect();
  } catch (err) {
    setStatus(`${err.message}`, true);
    return;
  }
  if (!$("handsfree").checked && !pressed) return; // released while the microphone was being opened
  if (current && answering()) interrupt();
  if (current) archive(current);
  sources = [];
  current = { id: null, text: "", chunks: 0, samples: 0, sampleRate: RATE, firstPacketMs: null,
              serverFirstPacketMs: null, questionSeconds: 0, done: false, error: null, endedAt: 0 };
  state.answers.push(current);
  const omega = Math.max(0, Number($("omega").value) || 0);
  ws.send(JSON.stringify({ type: "start", format: "f32", chunk_size: omega, sample_rate: RATE }));
  listening = true;
  frame = [];
  framed = 0;
  peaks = [];
  heard = false;
  quietSince = 0;
  const opening = preroll;
  preroll = [];
  for (const samples of opening) onSamples(samples);
  $("talk").classList.add("on");
  $("talk").textContent = $("handsfree").checked ? "Listening… (click to stop)" : "Listening… release to ask";
  setStatus("listening");
  render();
}

function stopTalking(send = true) {
  if (!listening) return;
  listening = false;
  sendFrame();
  if (send && ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "end" }));
  current.endedAt = performance.now();
  $("talk").classList.remove("on");
  $("talk").textContent = $("handsfree").checked ? "Click to talk" : "Hold to talk";
  if (!current.error) setStatus("thinking…");
}

function onSamples(samples) {
  if (!listening) return $("handsfree").checked && overAnswer(samples);
  frame.push(samples);
  framed += samples.length;
  current.questionSeconds += samples.length / RATE;
  let peak = 0;
  let energy = 0;
  for (const s of samples) {
    peak = Math.max(peak, Math.abs(s));
    energy += s * s;
  }
  peaks.push(peak);
  if (framed >= FRAME) sendFrame();
  drawWave();
  if ($("handsfree").checked) detectEnd(Math.sqrt(energy / samples.length));
}

function rmsOf(samples) {
  let energy = 0;
  for (const s of samples) energy += s * s;
  return Math.sqrt(energy / samples.length);
}

// Hands-free between questions: keep the last PREROLL samples; speech over an answer for BARGE_MS interrupts it
// and starts the next question with them.
function overAnswer(samples) {
  preroll.push(samples);
  while (preroll.length * samples.length > PREROLL) preroll.shift();
  if (!current || !answering()) return (speechMs = 0);
  const ms = (1000 * samples.length) / RATE; // loud blocks count up, others down at half the rate (speech dips)
  speechMs = rmsOf(samples) > SPEECH_RMS ? speechMs + ms : Math.max(0, speechMs - ms / 2);
  if (speechMs >= BARGE_MS) {
    speechMs = 0;
    interrupt(); // at once: playback stops before the new question is opened
    startTalking();
  }
}

// The answer (accepted by the server) is still coming or still playing, and not already cut.
function answering() {
  const playing = ctx && ctx.currentTime < playhead;
  return current.id !== null && !current.error && !current.interrupted && !cut && (!current.done || playing);
}

// Stop the answer's playback now; tell the server how much of it was played.
function interrupt() {
  const now = ctx.currentTime;
  let played = 0;
  for (const chunk of sources) {
    played += Math.round(Math.min(chunk.samples, Math.max(0, (now - chunk.at) * chunk.rate)));
    if (chunk.at + chunk.samples / chunk.rate > now) chunk.source.stop();
  }
  current.interrupted = { played, stopped: sources.filter((c) => c.at + c.samples / c.rate > now).length, heard: null };
  sources = [];
  playhead = 0;
  cut = current;
  state.interrupts = (state.interrupts || 0) + 1;
  ws.send(JSON.stringify({ type: "interrupt", played }));
}

function detectEnd(rms) {
  const now = performance.now();
  if (rms > SPEECH_RMS) {
    heard = true;
    quietSince = 0;
  } else if (heard && rms < QUIET_RMS) {
    quietSince = quietSince || now;
    if (now - quietSince > QUIET_MS) stopTalking();
  }
}

function sendFrame() {
  if (!framed || !ws || ws.readyState !== WebSocket.OPEN) return;
  const out = new Float32Array(framed);
  let at = 0;
  for (const part of frame) {
    out.set(part, at);
    at += part.length;
  }
  ws.send(out.buffer);
  frame = [];
  framed = 0;
}

function onMessage(e) {
  if (typeof e.data !== "string") return cut ? undefined : onAudio(new Float32Array(e.data));
  const event = JSON.parse(e.data);
  if (cut) {
    // the interrupted answer's last events, up to its "interrupted" (or an error: nothing left to stop)
    if (event.type === "interrupted") {
      cut.interrupted.heard = event.heard;
      if (archived.has(cut)) archived.get(cut).textContent = summary(cut); // now with what was heard
    }
    if (event.type === "audio") cut.interrupted.dropped = (cut.interrupted.dropped || 0) + 1;
    if (event.type === "interrupted" || event.type === "error") cut = null;
    return;
  }
  if (!current) return;
  if (event.type === "accepted") current.id = event.id;
  else if (event.type === "text") current.text += event.delta;
  else if (event.type === "audio") announced = event;
  else if (event.type === "timing" && event.name === "first_packet") current.serverFirstPacketMs = event.ms;
  else if (event.type === "done") {
    current.done = true;
    current.contextTurns = event.context_turns;
    setStatus("ready");
  } else if (event.type === "error") {
    fail(`${event.kind}: ${event.message}`);
    if (listening) stopTalking(); // the server skips the rest of this question up to its end
  }
  render();
}

function onAudio(samples) {
  if (!current || !announced) return;
  if (current.firstPacketMs === null) current.firstPacketMs = performance.now() - current.endedAt;
  current.chunks += 1;
  current.samples += samples.length;
  current.sampleRate = announced.sample_rate;
  play(samples, announced.sample_rate);
  announced = null;
  render();
}

// Gapless: each chunk starts where the previous one ends (the first after a short cushion).
function play(samples, rate) {
  const buffer = ctx.createBuffer(1, samples.length, rate);
  buffer.copyToChannel(samples, 0);
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  const at = Math.max(playhead, ctx.currentTime + 0.1);
  source.start(at);
  playhead = at + buffer.duration;
  sources.push({ source, at, samples: samples.length, rate });
  state.scheduled += 1;
}

function fail(message) {
  current.error = message;
  setStatus(message, true);
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function render() {
  if (!current) return;
  $("answer").textContent = current.text;
  if (current.firstPacketMs !== null) {
    const server = current.serverFirstPacketMs === null ? "" : ` (server: ${Math.round(current.serverFirstPacketMs)} ms)`;
    $("latency").textContent = `first packet: ${Math.round(current.firstPacketMs)} ms${server}`;
  } else {
    $("latency").textContent = "";
  }
  const seconds = (current.samples / current.sampleRate).toFixed(1);
  $("audio-info").textContent = current.chunks ? `${current.chunks} audio chunks, ${seconds} s` : "";
}

function summary(answer) {
  const latency = answer.firstPacketMs === null ? "no audio" : `first packet ${Math.round(answer.firstPacketMs)} ms`;
  let said = answer.error ? answer.error : answer.text.trim().slice(0, 120);
  if (answer.interrupted) said = `${(answer.interrupted.heard ?? answer.text).trim().slice(0, 120)}… (interrupted)`;
  return `${answer.questionSeconds.toFixed(1)} s question, ${latency}: ${said}`;
}

function archive(answer) {
  const item = document.createElement("li");
  item.textContent = summary(answer);
  archived.set(answer, item);
  if (answer.error) item.className = "error";
  $("history").prepend(item);
  $("earlier").hidden = false;
}

function drawWave() {
  const canvas = $("wave");
  const g = canvas.getContext("2d");
  const { width, height } = canvas;
  g.clearRect(0, 0, width, height);
  g.fillStyle = "#2f6fde";
  const step = width / Math.max(peaks.length, WAVE_PEAKS); // pixels per peak
  peaks.forEach((peak, i) => {
    const h = Math.max(1, Math.min(1, peak * 2) * height);
    g.fillRect(i * step, (height - h) / 2, Math.max(1, step), h);
  });
}

const talk = $("talk");
function press() {
  pressed = true;
  if ($("handsfree").checked && listening) stopTalking();
  else startTalking();
}

function release() {
  pressed = false;
  if (!$("handsfree").checked) stopTalking();
}

talk.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  press();
});
talk.addEventListener("pointerup", release);
talk.addEventListener("pointerleave", () => pressed && release());
document.addEventListener("keydown", (e) => {
  if (e.code === "Space" && !e.repeat && e.target.tagName !== "INPUT") {
    e.preventDefault();
    press();
  }
});
document.addEventListener("keyup", (e) => {
  if (e.code === "Space" && e.target.tagName !== "INPUT") release();
});
$("handsfree").addEventListener("change", () => {
  talk.textContent = $("handsfree").checked ? "Click to talk" : "Hold to talk";
});
