// GuppyLM in the browser: onnxruntime-web (single-threaded wasm) runs the exported graph,
// @huggingface/tokenizers reads the run's own tokenizer.json. Chats like
// `python -m guppy_jax.chat`: the ChatML prompt, temperature / top-k / top-p, stop at <|im_end|>.
// The graph takes (tokens, past_k, past_v) and returns (logits, present_k, present_v): the prompt
// runs once with an empty past, then each new token costs one position.
import * as ort from "./lib/onnxruntime-web.js";
import { Tokenizer } from "./lib/tokenizers.js";

ort.env.wasm.numThreads = 1; // no SharedArrayBuffer, so no special server headers
ort.env.wasm.wasmPaths = { // web_site.py copies them under these names
  mjs: new URL("./lib/ort-wasm-simd-threaded.js", import.meta.url).href,
  wasm: new URL("./lib/ort-wasm-simd-threaded.wasm", import.meta.url).href,
};

const MODEL_FILES = { int8: "model/guppy.int8.onnx", float32: "model/guppy.onnx" };

export function formatPrompt(user) {
  return `<|im_start|>user\n${user}<|im_end|>\n<|im_start|>assistant\n`;
}

// The rule of guppy_jax.generate.sample_logits: greedy at temperature 0 (the first largest
// logit), else logits / temperature, keep the top-k and the smallest top-p prefix, sample.
export function pickNext(logits, { temperature = 0.7, topK = 50, topP = 1.0 }, random = Math.random) {
  if (!(temperature > 0)) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  const scaled = Array.from(logits, (x) => x / temperature);
  const sorted = [...scaled].sort((a, b) => b - a);
  const k = topK > 0 ? Math.min(topK, sorted.length) : sorted.length;
  const max = sorted[0];
  const exps = sorted.map((x) => Math.exp(x - max));
  const total = exps.reduce((a, b) => a + b, 0);
  let before = 0, nKeep = 0;
  for (const e of exps) { if (before < topP) nKeep++; before += e / total; }
  const floor = Math.max(sorted[k - 1], sorted[Math.max(nKeep, 1) - 1]);
  const weights = scaled.map((x) => (x < floor ? 0 : Math.exp(x - max)));
  let r = random() * weights.reduce((a, b) => a + b, 0);
  for (let i = 0; i < weights.length; i++) { r -= weights[i]; if (r < 0 && weights[i] > 0) return i; }
  return scaled.indexOf(max);
}

// A small seeded generator (mulberry32), so a seed gives the same answer again.
export function seeded(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Guppy {
  static async load(precision = "int8", base = new URL(".", import.meta.url)) {
    const get = async (path) => {
      const response = await fetch(new URL(path, base));
      if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
      return response;
    };
    const meta = await (await get("model/guppy.json")).json();
    if (!(MODEL_FILES[precision].slice("model/".length) in meta.files)) precision = "float32"; // built --no-int8
    const tokenizer = new Tokenizer(await (await get("model/tokenizer.json")).json(), {});
    const bytes = await (await get(MODEL_FILES[precision])).arrayBuffer();
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    return new Guppy(meta, tokenizer, session, precision, bytes.byteLength);
  }

  constructor(meta, tokenizer, session, precision, modelBytes) {
    Object.assign(this, { meta, tokenizer, session, precision, modelBytes });
    this.cfg = meta.model;
  }

  encode(text) { return this.tokenizer.encode(text).ids; }

  decode(ids) { return this.tokenizer.decode(ids, { skip_special_tokens: true }); }

  // One call of the graph: logits of the last position and the grown cache.
  async step(tokens, pastK, pastV) {
    const input = new ort.Tensor("int64", BigInt64Array.from(tokens, BigInt), [1, tokens.length]);
    const out = await this.session.run({ tokens: input, past_k: pastK, past_v: pastV });
    const V = this.cfg.vocab_size;
    const last = out.logits.data.subarray((tokens.length - 1) * V, tokens.length * V);
    return { logits: last, pastK: out.present_k, pastV: out.present_v };
  }

  emptyCache() {
    const { n_layers: L, n_heads: H } = this.cfg;
    return new ort.Tensor("float32", new Float32Array(0), [L, 1, H, 0, this.meta.head_dim]);
  }

  defaultAnswerLen() { return Math.min(64, Math.floor(this.cfg.max_seq_len / 2)); }

  // New token ids for a prompt's ids, up to and including <|im_end|>, as guppy_jax.generate.
  async generate(promptIds, options = {}) {
    const maxNew = options.maxNewTokens ?? this.defaultAnswerLen();
    const random = seeded(options.seed ?? 0);
    const ids = promptIds.slice(-(this.cfg.max_seq_len - maxNew)); // chat cuts long prompts from the left
    const t0 = performance.now();
    let state = await this.step(ids, this.emptyCache(), this.emptyCache());
    const t1 = performance.now();
    const out = [];
    for (;;) {
      out.push(pickNext(state.logits, options, random));
      const full = ids.length + out.length >= this.cfg.max_seq_len;
      if (out.at(-1) === this.cfg.eos_id || out.length === maxNew || full) break;
      state = await this.step([out.at(-1)], state.pastK, state.pastV);
    }
    const t2 = performance.now();
    const decodeSteps = out.length - 1;
    return { ids: out, promptIds: ids, prefillMs: t1 - t0, decodeMs: t2 - t1,
             tokensPerSecond: decodeSteps > 0 && t2 > t1 ? (1000 * decodeSteps) / (t2 - t1) : null };
  }

  // The chat answer to one user message: {text, ids, promptIds, tokensPerSecond, ...}.
  async answer(message, options = {}) {
    const result = await this.generate(this.encode(formatPrompt(message)), options);
    return { ...result, text: this.decode(result.ids).trim() };
  }
}
