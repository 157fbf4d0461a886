// The page: loads Guppy (int8 unless ?precision=float32), wires the form, and exposes
// window.guppy = {ready, encode, decode, answer, info} for scripts and tests.
import { Guppy } from "./guppy.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const precision = params.get("precision") === "float32" ? "float32" : "int8";
$("precision").value = precision;
$("precision").addEventListener("change", () => {
  params.set("precision", $("precision").value);
  location.search = params.toString();
});

function say(cls, text) {
  const line = document.createElement("div");
  line.className = cls;
  line.textContent = text;
  $("log").append(line);
}

function sampling() {
  return { temperature: Number($("temperature").value), topK: Number($("topK").value),
           topP: Number($("topP").value), seed: Math.floor(Math.random() * 2 ** 31) };
}

const ready = Guppy.load(precision).then((guppy) => {
  const mb = (guppy.modelBytes / 2 ** 20).toFixed(1);
  $("precision").value = guppy.precision;
  $("status").textContent = `${guppy.precision} model loaded (${mb} MiB), single-threaded wasm`;
  $("message").disabled = $("send").disabled = false;
  return guppy;
}).catch((err) => {
  $("status").textContent = `could not load the model: ${err.message}`;
  throw err;
});

$("chat").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = $("message").value.trim();
  if (!message) return;
  $("message").value = "";
  say("you", `You> ${message}`);
  const guppy = await ready;
  const result = await guppy.answer(message, sampling());
  say("fish", `Guppy> ${result.text}`);
  const rate = result.tokensPerSecond ? `${result.tokensPerSecond.toFixed(0)} tokens/s` : "";
  $("status").textContent = `${result.ids.length} tokens, ${rate}`;
});

window.guppy = {
  ready: ready.then(() => true),
  encode: async (text) => (await ready).encode(text),
  decode: async (ids) => (await ready).decode(ids),
  answer: async (message, options = {}) => (await ready).answer(message, options),
  info: async () => {
    const g = await ready;
    return { precision: g.precision, modelBytes: g.modelBytes, model: g.cfg };
  },
};
