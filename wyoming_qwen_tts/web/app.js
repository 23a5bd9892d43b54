// The voices page: plain JS talking to the server's REST API with relative URLs (so it works under
// Home Assistant ingress's path prefix). Names and descriptions come from users: they only ever
// reach the page through textContent, never innerHTML.
"use strict";

const TOKEN_KEY = "wyoming-qwen-tts.token";
const LANGUAGES = {
  en: "English", zh: "Chinese", ja: "Japanese", ko: "Korean", de: "German",
  fr: "French", ru: "Russian", pt: "Portuguese", es: "Spanish", it: "Italian",
};
const SAMPLES = {
  en: "Hello! This is how I sound.", zh: "你好！这就是我的声音。", ja: "こんにちは！これが私の声です。",
  ko: "안녕하세요! 제 목소리는 이래요.", de: "Hallo! So klinge ich.", fr: "Bonjour ! Voici ma voix.",
  ru: "Привет! Вот так звучит мой голос.", pt: "Olá! É assim que eu soo.", es: "¡Hola! Así suena mi voz.",
  it: "Ciao! Ecco come suona la mia voce.",
};
const $ = (id) => document.getElementById(id);
let voices = [];
let kinds = {}; // the server's voice kinds: {name: {label, creatable}}

class ApiError extends Error {}

// --- the API -----------------------------------------------------------------------------------

async function api(path, { method = "GET", json, form, blob = false } = {}) {
  const headers = {};
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (err) {
    throw new ApiError(`The server cannot be reached (${err.message}).`);
  }
  if (response.status === 401) {
    askForToken(token ? "The server refused this token." : "");
    throw new ApiError("This server needs an access token: enter it above.");
  }
  if (!response.ok) throw new ApiError(await errorMessage(response));
  if (response.status === 204) return null;
  return blob ? response.blob() : response.json();
}

async function errorMessage(response) {
  try {
    const answer = await response.json();
    if (answer && answer.error && answer.error.message) return answer.error.message;
  } catch (err) {
    // not JSON: fall through to the status line
  }
  return `The server answered ${response.status} ${response.statusText}.`;
}

function speak(voice, text, language) {
  const request = { model: "qwen3-tts", input: text, voice, response_format: "wav" };
  if (language) request.language = language;
  return api("v1/audio/speech", { method: "POST", json: request, blob: true });
}

// --- status lines: a spinner with text while working, then the outcome --------------------------

function hideStatus(element) {
  element.hidden = true;
  element.className = "status";
}

function showStatus(element, text, state) {
  element.hidden = false;
  element.className = `status ${state || ""}`.trim();
  element.querySelector(".status-text").textContent = text;
}

// Runs work with the buttons disabled and a spinner and a running clock in the status line.
async function busy(statusElement, text, buttons, work) {
  const started = Date.now();
  showStatus(statusElement, `${text}`, "working");
  const clock = setInterval(() => {
    const seconds = Math.round((Date.now() - started) / 1000);
    showStatus(statusElement, `${text} ${seconds} s`, "working");
  }, 1000);
  buttons.forEach((button) => { button.disabled = true; });
  try {
    const outcome = await work();
    hideStatus(statusElement);
    return outcome;
  } catch (err) {
    showStatus(statusElement, err.message, "error");
    return undefined;
  } finally {
    clearInterval(clock);
    buttons.forEach((button) => { button.disabled = false; });
  }
}

function playInto(audio, blob) {
  if (audio.dataset.url) URL.revokeObjectURL(audio.dataset.url);
  audio.dataset.url = URL.createObjectURL(blob);
  audio.src = audio.dataset.url;
  audio.hidden = false;
  return audio.play().catch(() => {
    // The browser may refuse to start sound without a recent click; the controls are there.
  });
}

function base64ToBlob(base64, type) {
  const bytes = Uint8Array.from(atob(base64), (char) => char.charCodeAt(0));
  return new Blob([bytes], { type });
}

// --- token ---------------------------------------------------------------------------------------

function askForToken(problem) {
  $("token-panel").hidden = false;
  if (problem) showMessage(problem);
  $("token-input").focus();
}

function saveToken(event) {
  event.preventDefault();
  localStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token-input").value = "";
  $("token-panel").hidden = true;
  hideMessage();
  loadVoices();
}

function showMessage(text) {
  $("message").textContent = text;
  $("message").hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

// --- voices --------------------------------------------------------------------------------------

async function loadVoices() {
  const status = $("voices-status");
  showStatus(status, "Loading the voices…", "working");
  let catalog;
  try {
    catalog = await api("v1/audio/voices");
  } catch (err) {
    showStatus(status, err.message, "error");
    return;
  }
  voices = catalog.voices;
  kinds = catalog.kinds || {};
  hideStatus(status);
  renderVoices(catalog.default);
  fillVoiceSelect(catalog.default);
}

function renderVoices(defaultName) {
  const list = $("voice-list");
  list.replaceChildren(...voices.map((voice) => voiceItem(voice, voice.name === defaultName)));
  if (!voices.length) showStatus($("voices-status"), "No voices.", "");
}

function voiceItem(voice, isDefault) {
  const item = $("voice-template").content.firstElementChild.cloneNode(true);
  item.dataset.voice = voice.name;
  item.querySelector(".voice-name").textContent = voice.name;
  const kind = item.querySelector(".kind");
  kind.textContent = (kinds[voice.kind] || {}).label || voice.kind;
  kind.classList.add(`kind-${voice.kind}`);
  item.querySelector(".default-badge").hidden = !isDefault;
  item.querySelector(".voice-description").textContent = voice.description || "";
  item.querySelector(".voice-languages").textContent = languageNames(voice.languages);
  const play = item.querySelector(".play");
  play.addEventListener("click", () => playVoice(voice, play));
  const remove = item.querySelector(".delete");
  remove.hidden = !voice.managed;
  remove.addEventListener("click", () => deleteVoice(voice.name, remove));
  return item;
}

function languageNames(codes) {
  if (!codes || !codes.length) return "";
  if (Object.keys(LANGUAGES).every((code) => codes.includes(code))) return "Any of the ten languages";
  return codes.map((code) => LANGUAGES[code] || code).join(" · ");
}

function fillVoiceSelect(defaultName) {
  const select = $("try-voice");
  const chosen = select.value || defaultName;
  select.replaceChildren(...voices.map((voice) => new Option(voice.name, voice.name)));
  if (voices.some((voice) => voice.name === chosen)) select.value = chosen;
}

async function playVoice(voice, button) {
  const language = (voice.languages || [])[0];
  const text = SAMPLES[language] || SAMPLES.en;
  const status = $("voices-status");
  const audio = await busy(status, `Speaking a sample of ${voice.name}…`, [button],
    () => speak(voice.name, text));
  if (audio) playInto($("voice-player"), audio);
}

async function deleteVoice(name, button) {
  if (!window.confirm(`Delete the voice "${name}"? This cannot be undone.`)) return;
  const done = await busy($("voices-status"), `Deleting ${name}…`, [button],
    () => api(`v1/audio/voices/${encodeURIComponent(name)}`, { method: "DELETE" }).then(() => true));
  if (done) await loadVoices();
}

// --- try -----------------------------------------------------------------------------------------

async function tryVoice(event) {
  event.preventDefault();
  const voice = $("try-voice").value;
  const audio = await busy($("try-status"), `Speaking as ${voice}…`, [$("try-button")],
    () => speak(voice, $("try-text").value));
  if (audio) playInto($("try-player"), audio);
}

// --- design --------------------------------------------------------------------------------------

let takesDesign = null;

async function makeTakes(event) {
  event.preventDefault();
  const design = $("design-text").value.trim();
  const language = $("design-language").value;
  const count = Number($("design-count").value);
  const label = count === 1 ? "Rendering a take…" : `Rendering ${count} takes…`;
  const preview = await busy($("design-status"), label, [$("design-button"), $("keep-button")],
    () => api("v1/audio/voices/preview", { method: "POST", json: { design, language, n: count } }));
  if (!preview) return;
  takesDesign = { design, language };
  $("take-sentence").textContent = `Each take says: “${preview.sentence}”`;
  $("take-list").replaceChildren(...preview.takes.map(takeItem));
  $("take-list").querySelector("input").checked = true;
  hideStatus($("keep-status"));
  $("takes-panel").hidden = false;
}

function takeItem(take, index) {
  const item = $("take-template").content.firstElementChild.cloneNode(true);
  item.dataset.seed = take.seed;
  item.querySelector("input").value = take.seed;
  item.querySelector(".take-label").textContent =
    `Take ${index + 1} (seed ${take.seed}, ${Number(take.duration).toFixed(1)} s)`;
  const audio = item.querySelector("audio");
  audio.src = URL.createObjectURL(base64ToBlob(take.audio, "audio/wav"));
  audio.preload = "auto";
  audio.addEventListener("play", () => { item.querySelector("input").checked = true; });
  return item;
}

async function keepTake(event) {
  event.preventDefault();
  const chosen = $("take-list").querySelector("input:checked");
  if (!chosen || !takesDesign) return;
  const name = $("keep-name").value.trim();
  const description = $("keep-description").value.trim() || `${name} (designed)`;
  const request = { name, description, design: takesDesign.design, language: takesDesign.language,
                    seed: Number(chosen.value) };
  const voice = await busy($("keep-status"), `Keeping ${name}: rendering the voice…`,
    [$("keep-button"), $("design-button")],
    () => api("v1/audio/voices", { method: "POST", json: request }));
  if (!voice) return;
  showStatus($("keep-status"), `Kept as “${voice.name}”.`, "done");
  await loadVoices();
}

// --- clone ---------------------------------------------------------------------------------------

async function cloneVoice(event) {
  event.preventDefault();
  const form = new FormData();
  const name = $("clone-name").value.trim();
  const xVectorOnly = $("clone-xvector").checked;
  const transcript = $("clone-transcript").value.trim();
  form.append("name", name);
  form.append("description", $("clone-description").value.trim() || `${name} (cloned)`);
  form.append("reference", $("clone-file").files[0]);
  if (transcript && !xVectorOnly) form.append("reference_text", transcript);
  form.append("x_vector_only", String(xVectorOnly || !transcript));
  form.append("language", $("clone-language").value);
  const voice = await busy($("clone-status"), `Cloning ${name}…`, [$("clone-button")],
    () => api("v1/audio/voices", { method: "POST", form }));
  if (!voice) return;
  showStatus($("clone-status"), `Cloned as “${voice.name}”.`, "done");
  await loadVoices();
}

// --- start ---------------------------------------------------------------------------------------

function fillLanguageSelects() {
  for (const select of document.querySelectorAll("select.languages")) {
    select.replaceChildren(new Option("Auto", "auto"),
      ...Object.entries(LANGUAGES).map(([code, name]) => new Option(name, code)));
  }
}

function start() {
  fillLanguageSelects();
  $("token-form").addEventListener("submit", saveToken);
  $("refresh").addEventListener("click", loadVoices);
  $("try-form").addEventListener("submit", tryVoice);
  $("design-form").addEventListener("submit", makeTakes);
  $("keep-form").addEventListener("submit", keepTake);
  $("clone-form").addEventListener("submit", cloneVoice);
  $("clone-xvector").addEventListener("change", () => {
    $("clone-transcript").disabled = $("clone-xvector").checked;
  });
  loadVoices();
}

document.addEventListener("DOMContentLoaded", start);
